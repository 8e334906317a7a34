"""`python -m eyas.distill ...` = `eyas distill ...` (the entry torchrun starts on every rank)."""
import sys

from eyas.cli_args import run_command
from eyas.distill.cli import main

sys.exit(run_command("distill", main, sys.argv[1:]))
