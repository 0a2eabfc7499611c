"""prmkd: distil several pre-trained recommendation models into the small model that runs online (PRM-KD)."""

__version__ = "0.1.0"
