"""Sources: each kind decided by `sources.source_from` / `sources.job_sources` and nowhere
else, and what every kind tells the pipelines, the evaluation and the job."""

import ast
import os

import numpy as np
import pytest
import tensorflow_datasets as tfds
from PIL import Image

from keras_byol import data, experiment, sources
from keras_byol.folders import list_image_folder
from tests.test_package import PACKAGE


@pytest.fixture(scope="module")
def two_class_folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("sources")
    rng = np.random.default_rng(0)
    for name in ("cat", "dog"):
        (root / name).mkdir()
        for i in range(3):
            pixels = rng.integers(0, 256, (12, 10, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(root / name / f"{i}.png")
    return root


def test_each_kind_is_decided_once(two_class_folder, tmp_path, monkeypatch):
    images = np.zeros((4, 8, 8, 3), np.uint8)
    labels = np.array([0, 2, 1, 2])
    arrays = sources.source_from((images, labels))
    assert arrays.kind == "arrays" and arrays.num_classes() == 3
    np.testing.assert_array_equal(arrays.ids_and_labels()[0], np.arange(4))
    assert sources.source_from(images).num_classes() is None
    assert sources.source_from(images).ids_and_labels()[1].tolist() == [-1] * 4

    folder = sources.source_from(str(two_class_folder))
    assert folder.kind == "folder" and folder.class_names == ["cat", "dog"]
    assert folder.num_classes() == 2 and len(folder.ids_and_labels()[0]) == 6
    listed = list_image_folder(two_class_folder)
    assert sources.source_from(listed).folder is listed
    assert sources.source_from(folder) is folder
    # A path that does not exist is a folder (its error names it), never a tfds name.
    missing = sources.source_from(os.fspath(tmp_path / "missing"))
    assert missing.kind == "folder"
    with pytest.raises(ValueError, match="missing.*does not exist"):
        missing.num_classes()
    monkeypatch.chdir(two_class_folder)
    assert sources.source_from("cat").kind == "folder"  # relative, existing

    tfds_source = sources.source_from("cifar10")
    assert tfds_source.kind == "tfds" and tfds_source.columns() is None
    assert tfds_source.pretrain_split() == "train"
    assert sources.source_from("stl10").pretrain_split() == "unlabelled"
    with tfds.testing.mock_data(num_examples=6):
        assert tfds_source.num_classes() == 10 and len(tfds_source.class_names) == 10
        ids, split_labels = tfds_source.ids_and_labels()
        assert len(ids) == 6 and ids.dtype == object and split_labels.dtype == np.int64

    with pytest.raises(TypeError, match="source must be"):
        sources.source_from([images])


def test_the_job_and_evaluate_read_the_same_sources_for_a_dataset(two_class_folder):
    """The job's --dataset and evaluate's --dataset/--test_dataset go through one function
    (`keras_byol.evaluate` is not imported here: its absl flags would clash with the job's)."""
    pretrain, (train, test), splits = sources.job_sources(sources.BUNDLED_MNIST, 8, seed=1)
    assert pretrain is train and (len(train.images), len(test.images)) == (4000, 1000)
    assert train.images.shape[1:] == (8, 8, 3) and splits == (None, None)
    assert experiment._sources(experiment.PretrainConfig(image_size=8, seed=1))[0].kind == "arrays"

    folder, evaluation, _ = sources.job_sources(str(two_class_folder), 8)
    assert folder.kind == "folder" and evaluation is None  # no held-out split
    # keras_byol.evaluate's --dataset/--test_dataset (evaluating: a test split is needed).
    with pytest.raises(ValueError, match="--test_dataset=FOLDER"):
        sources.job_sources(str(two_class_folder), 8, evaluating=True)
    _, (train, test), _ = sources.job_sources(
        str(two_class_folder), 8, test_dataset=str(two_class_folder), evaluating=True
    )
    assert test.kind == "folder" and test.class_names == train.class_names == ["cat", "dog"]
    pretrain, evaluation, splits = sources.job_sources("cifar10", 8)
    assert pretrain.kind == "tfds" and evaluation == (pretrain, pretrain)
    assert splits == ("train", "test")


def _kind_decisions(tree):
    """Lines of a module that tell a source's kind by its type or its name."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and ast.unparse(node.func) == "os.path.isdir":
            found.append(node.lineno)
        if isinstance(node, ast.Call) and ast.unparse(node.func) == "isinstance":
            kinds = ast.unparse(node.args[1])
            if any(name in kinds for name in ("ImageFolder", "os.PathLike", "np.ndarray")):
                found.append(node.lineno)
        if isinstance(node, ast.Compare) and "BUNDLED_MNIST" in ast.unparse(node):
            found.append(node.lineno)
    return found


# Modules that may look at types and paths: the sources, the folder lister, the run folder,
# and the evaluation's features of an image array (not a source).
_OWNERS = {"sources", "folders", "workdir", "evaluation"}


def test_no_other_module_decides_a_source_kind():
    decisions = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        if path.stem not in _OWNERS:
            lines = _kind_decisions(ast.parse(path.read_text()))
            if lines:
                decisions[path.stem] = lines
    assert decisions == {}
    # The check finds the decisions the job made before sources existed.
    before = (
        "if config.dataset == BUNDLED_MNIST:\n    pass\nif os.path.isdir(config.dataset):\n    pass"
    )
    assert _kind_decisions(ast.parse(before)) == [1, 3]


def test_data_functions_take_every_kind(two_class_folder):
    for source in ((np.zeros((2, 4, 4, 3), np.uint8), np.array([0, 1])), str(two_class_folder)):
        assert data.num_classes(source) == 2
        assert data.is_folder(source) == isinstance(source, str)
        assert data.num_classes(sources.source_from(source)) == 2
