"""Canonical datasets and the importers that make them."""

from bridges.datasets._format import (
    Dataset,
    DatasetCard,
    McqSample,
    Message,
    OpenSample,
    QaSample,
    Sample,
    load_dataset,
    load_samples_file,
    read_jsonl_objects,
    read_samples,
)
from bridges.datasets._importers import IMPORTERS, import_dataset, import_source, importer

__all__ = [
    "IMPORTERS",
    "Dataset",
    "DatasetCard",
    "McqSample",
    "Message",
    "OpenSample",
    "QaSample",
    "Sample",
    "import_dataset",
    "import_source",
    "importer",
    "load_dataset",
    "load_samples_file",
    "read_jsonl_objects",
    "read_samples",
]
