"""Stand-in for `isaaclab.app`: `AppLauncher` records that the simulation app runs (tests only)."""
import json
import os

launches: list[dict] = []


class AppLauncher:
    """Records its keyword arguments; `isaaclab_tasks` refuses to import before one exists, like Isaac Sim."""

    def __init__(self, launcher_args=None, **kwargs):
        settings = dict(vars(launcher_args)) if launcher_args is not None and not isinstance(launcher_args, dict) \
            else dict(launcher_args or {})
        settings.update(kwargs)
        launches.append(settings)
        log = os.environ.get("EYAS_ISAACLAB_STANDIN_LOG")
        if log:
            with open(log, "a") as f:
                f.write(json.dumps({"event": "AppLauncher", **settings}) + "\n")
        self.app = object()
