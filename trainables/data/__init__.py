"""The datasets of a trial. Importing this package registers every dataset in DATASETS.

- containers: samples, views, the bundle a dataset loads into, its options, and the registry
- disk: datasets read from `data.root` (CIFAR-10/100, STL-10, image folders)
- digit_worlds: scikit-learn's digits and the composite worlds drawn from them
- randbit: any in-memory image dataset with random bits appended (feature suppression)
- theory_worlds: the theory papers' generated vector worlds (sparse coding, Gaussian worlds)"""
from trainables.data import digit_worlds, disk, randbit, theory_worlds  # noqa: F401  (registration)
from trainables.data.containers import (DATASETS, DataBundle, DatasetOptions, FolderImages, TensorSamples, ViewMaker,
                                        check_data, dataset_options, dataset_root, load_data, require_option)

__all__ = ["DATASETS", "DataBundle", "DatasetOptions", "FolderImages", "TensorSamples", "ViewMaker", "check_data",
           "dataset_options", "dataset_root", "load_data", "require_option"]
