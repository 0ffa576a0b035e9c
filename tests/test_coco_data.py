"""COCO annotation files as the detection loader reads them: each malformed entry refused by name,
crowd regions, box-only files, 16-bit images."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from helpers import drop_segmentations
from swinv2.dense.data import CocoDetectionData, SplitPaths


def _coco_file(tmp_path, change=None):
    """A one-image COCO split (``change`` edits the annotation dict before it is written)."""
    images = tmp_path / "images"
    images.mkdir(exist_ok=True)
    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(images / "a.png")
    box = [[[2, 2, 12, 2, 12, 12, 2, 12]], [[16, 16, 30, 16, 30, 30, 16, 30]]]
    coco = {
        "images": [{"id": 1, "file_name": "a.png", "width": 32, "height": 32}],
        "annotations": [
            {"id": 1, "image_id": 1, "category_id": 1, "bbox": [2, 2, 10, 10], "segmentation": box[0]},
            {"id": 2, "image_id": 1, "category_id": 1, "bbox": [16, 16, 14, 14], "segmentation": box[1], "iscrowd": 1},
        ],
        "categories": [{"id": 1, "name": "thing"}],
    }
    if change is not None:
        change(coco)
    (tmp_path / "instances.json").write_text(json.dumps(coco))
    return SplitPaths(images, tmp_path / "instances.json")


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda c: c.pop("images"), r"no 'images' list"),
        (lambda c: c.pop("categories"), r"no 'categories' list"),
        (lambda c: c["annotations"][0].pop("bbox"), r"annotations\[0\] \(id 1\) has no 'bbox'"),
        (lambda c: c["annotations"][1].pop("category_id"), r"annotations\[1\] \(id 2\) has no 'category_id'"),
        (lambda c: c["annotations"][0].update(bbox=[1, 2, 3]), r"annotations\[0\].*\[1, 2, 3\] is not 4 finite"),
        (lambda c: c["annotations"][0].update(bbox=[1, 2, "3", 4]), r"is not 4 finite numbers"),
        (lambda c: c["annotations"][0].update(image_id=7), r"image_id 7 is not the id of any entry of 'images'"),
        (lambda c: c["images"][0].pop("file_name"), r"images\[0\] has no 'file_name'"),
        (lambda c: c["images"][0].pop("height"), r"images\[0\] has no 'height'"),
        (lambda c: c["images"][0].update(id="a"), r"images\[0\] has id 'a'; COCO ids are integers"),
        (lambda c: c["annotations"][1].update(id=1), r"annotations\[0\] and \[1\] share the id 1"),
        (lambda c: c["categories"].append({"id": 1, "name": "dup"}), r"categories\[0\] and \[1\] share the id 1"),
        (lambda c: c["annotations"][0].update(bbox=[2, 2, 0, 10]), r"bbox \[2, 2, 0, 10\] has no area"),
        (lambda c: c["annotations"][0].update(bbox=[40, 2, 5, 5]), r"bbox \[40, 2, 5, 5\] lies outside its 32 x 32"),
        (lambda c: c["annotations"][0].update(iscrowd=1), r"every annotation is a crowd region"),
        (lambda c: c.update(annotations=[]), r"'annotations' is empty; there is no object to learn or score"),
        (lambda c: c["annotations"][0].update(segmentation=[]), r"segmentation \[\] is neither polygons"),
        (lambda c: c["annotations"][0].update(segmentation=[[1, 2, 3]]), r"is neither polygons"),
    ],
)
def test_malformed_coco_annotations_are_refused_by_entry(tmp_path, change, message):
    from swinv2.dense.data import AnnotationError

    paths = _coco_file(tmp_path, change)
    with pytest.raises(AnnotationError, match=r"instances\.json: .*" + message):
        CocoDetectionData(paths)


def test_box_only_annotations_load_for_box_detectors_and_are_refused_for_masks(tmp_path):
    from swinv2.dense.data import AnnotationError

    paths = _coco_file(tmp_path, drop_segmentations)
    with pytest.raises(AnnotationError, match=r"has no 'segmentation'.*`--detector faster_rcnn` trains on boxes"):
        CocoDetectionData(paths)
    _, target = CocoDetectionData(paths, masks=False)[0]
    assert target["boxes"].tolist() == [[2.0, 2.0, 12.0, 12.0]] and "masks" not in target


def test_crowd_annotations_are_left_out_of_training_targets(tmp_path):
    data = CocoDetectionData(_coco_file(tmp_path, lambda c: c["annotations"][0].pop("area", None)))
    _, target = data[0]
    assert target["boxes"].tolist() == [[2.0, 2.0, 12.0, 12.0]] and target["masks"].shape == (1, 32, 32)
    assert data.coco.anns[2]["iscrowd"] == 1  # still in the index, where COCOeval ignores detections on it
    assert data.coco.anns[1]["area"] == 100 and data.coco.anns[1]["iscrowd"] == 0  # filled in for COCOeval


def test_detection_images_of_16_bits_are_scaled_not_clipped(tmp_path):
    paths = _coco_file(tmp_path)
    ramp = np.tile(np.linspace(0, 40000, 32).astype(np.uint16), (32, 1))
    Image.fromarray(ramp).save(paths.images / "a.png")  # a 16-bit grey image (mode I;16)
    image, _ = CocoDetectionData(paths)[0]
    assert image.shape == (3, 32, 32)
    assert image.max() == 1.0 and 0.45 < image.mean() < 0.55  # clipped at 255 it would be almost all white
