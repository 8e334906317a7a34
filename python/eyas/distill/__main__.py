"""`python -m eyas.distill ...` = `eyas distill ...`."""
import sys

from eyas.distill.cli import main

sys.exit(main())
