"""Registration of the subcommands that live beside the code they drive (teacher, run, report, sweep).

Each entry is a function taking the argparse sub-parsers object and adding one command to it.
"""

from .teachers.commands import register as _teacher

REGISTER: list = [_teacher]
