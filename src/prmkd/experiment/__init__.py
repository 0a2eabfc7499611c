"""Experiments: one run (`runner`), the whole pipeline (`pipeline`), cost side by side (`efficiency`), paired
significance tests (`stats`) and the folder layouts they write (`layout`). Nothing heavy is imported here."""
