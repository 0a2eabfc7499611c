"""Data: readers for four input kinds, the prepared `SeqDataset`, and typed batches."""

from .batches import EvalBatch, SeqBatch, TrainBatches, eval_batches, make_seq_batch, train_windows
from .dataset import SeqDataset, build, load_prepared, prepare

__all__ = ["SeqDataset", "SeqBatch", "EvalBatch", "TrainBatches", "eval_batches", "make_seq_batch",
           "train_windows", "build", "prepare", "load_prepared"]
