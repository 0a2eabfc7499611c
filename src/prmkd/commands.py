"""Registration of the subcommands that live beside the code they drive (teacher, run, sweep, report).

Each entry is a function taking the argparse sub-parsers object and adding one command to it.
"""

from .pipeline_commands import register as _pipeline
from .report_command import register as _report
from .teachers.commands import register as _teacher

REGISTER: list = [_teacher, _pipeline, _report]
