"""Training mapper never leaks masks; eval mapper returns ground truth at the original size."""

import numpy as np
import pytest
import torch
from detectron2.config import get_cfg
from PIL import Image

from bmp.config import add_bmp_config
from bmp.data.dataset_mapper import (
    SemSegEvalMapper,
    SupervisedDatasetMapper,
    WSSSDatasetMapper,
    build_train_mapper,
    cls_labels_to_multi_hot,
)
from bmp.data.transforms import RandomPadCrop, RandomScale

TRAIN_KEYS = {"image", "cls_label", "valid_mask", "height", "width", "file_name", "image_id"}


def _cfg(num_classes=3, crop=(16, 16)):
    cfg = get_cfg()
    add_bmp_config(cfg)
    cfg.MODEL.BMP.NUM_CLASSES = num_classes
    cfg.INPUT.CROP.SIZE = list(crop)
    return cfg


@pytest.fixture
def sample(tmp_path):
    img = np.zeros((6, 8, 3), dtype=np.uint8)
    img[:, :4] = (250, 10, 10)
    img[:, 4:] = (10, 10, 250)
    Image.fromarray(img).save(tmp_path / "a.png")
    mask = np.zeros((6, 8), dtype=np.uint8)
    mask[:, 4:] = 3
    mask[0, 0] = 255
    Image.fromarray(mask).save(tmp_path / "a_mask.png")
    return {
        "file_name": str(tmp_path / "a.png"),
        "image_id": "a",
        "height": 6,
        "width": 8,
        "cls_labels": [3, 1],
        "sem_seg_file_name": str(tmp_path / "a_mask.png"),
    }


def test_multi_hot():
    np.testing.assert_array_equal(cls_labels_to_multi_hot([1, 3], 3).numpy(), [1, 0, 1])
    np.testing.assert_array_equal(cls_labels_to_multi_hot([], 2).numpy(), [0, 0])


def test_train_mapper_from_config_never_emits_a_mask(sample):
    mapper = WSSSDatasetMapper(_cfg(), is_train=True)
    for _ in range(3):
        out = mapper(sample)
        assert set(out) == TRAIN_KEYS  # no "sem_seg", whatever the dict carries
        assert out["image"].dtype == torch.uint8 and out["image"].shape == (3, 16, 16)
        assert out["valid_mask"].dtype == torch.bool and out["valid_mask"].shape == (16, 16)
        np.testing.assert_array_equal(out["cls_label"].numpy(), [1, 0, 1])
        assert (out["height"], out["width"]) == (6, 8)
    # Proof that the mask file is never opened: the mapper works with it gone.
    sample["sem_seg_file_name"] = sample["sem_seg_file_name"] + ".missing"
    assert "sem_seg" not in mapper(sample)


def test_valid_mask_under_upscale_and_padding(sample):
    # 6x8 image, scaled x2 -> 12x16, padded/cropped to 20x12: 12 real rows x 12 real columns.
    mapper = WSSSDatasetMapper(
        is_train=True,
        augmentations=[RandomScale(2.0, 2.0), RandomPadCrop((20, 12), fill=(1, 2, 3))],
        image_format="RGB",
        num_classes=3,
    )
    np.random.seed(0)
    out = mapper(sample)
    valid = out["valid_mask"].numpy()
    img = out["image"].permute(1, 2, 0).numpy()
    assert valid.sum() == 12 * 12
    assert (img[~valid] == [1, 2, 3]).all()
    assert not (img[valid] == [1, 2, 3]).all(axis=1).any()
    rows = np.nonzero(valid.any(axis=1))[0]
    assert len(rows) == 12 and valid[rows].all()


def test_label_errors_name_the_file(sample):
    mapper = WSSSDatasetMapper(_cfg(num_classes=3), is_train=True)
    with pytest.raises(ValueError, match=r"a\.png.*class id 4.*1\.\.3"):
        mapper({**sample, "cls_labels": [1, 4]})
    with pytest.raises(ValueError, match=r"a\.png.*class id 0"):
        mapper({**sample, "cls_labels": [0]})
    negative = mapper({**sample, "cls_labels": []})  # kept by FILTER_EMPTY_ANNOTATIONS False
    assert negative["cls_label"].tolist() == [0.0, 0.0, 0.0]
    no_labels = {k: v for k, v in sample.items() if k != "cls_labels"}
    with pytest.raises(ValueError, match=r"a\.png.*no 'cls_labels'"):
        mapper(no_labels)
    # Outside training (e.g. the VOC test split) an unlabelled image is fine.
    out = WSSSDatasetMapper(_cfg(), is_train=False)(no_labels)
    assert "cls_label" not in out and "sem_seg" not in out
    assert out["valid_mask"].all() and out["image"].shape == (3, 6, 8)


def test_colour_jitter_keeps_contract(sample):
    cfg = _cfg()
    cfg.INPUT.COLOR_JITTER = True
    out = WSSSDatasetMapper(cfg, is_train=True)(sample)
    assert set(out) == TRAIN_KEYS


def test_eval_mapper_original_size(sample):
    cfg = _cfg()
    cfg.INPUT.MIN_SIDE_TEST = 0  # a 6x8 image is not too small for this test's purpose
    out = SemSegEvalMapper(cfg)(sample)
    assert out["image"].shape == (3, 6, 8)
    assert out["sem_seg"].dtype == torch.long and out["sem_seg"].shape == (6, 8)
    assert out["sem_seg"][0, 0] == 255 and out["sem_seg"][0, 5] == 3
    np.testing.assert_array_equal(out["cls_label"].numpy(), [1, 0, 1])

    cfg.INPUT.MIN_SIZE_TEST = 12
    out = SemSegEvalMapper(cfg)(sample)
    assert out["image"].shape == (3, 12, 16)  # only the image is resized
    assert out["sem_seg"].shape == (6, 8) and (out["height"], out["width"]) == (6, 8)


def test_eval_mapper_bad_masks(sample, tmp_path):
    mapper = SemSegEvalMapper(_cfg(num_classes=2))  # mask holds id 3 > K = 2
    with pytest.raises(ValueError, match=r"a_mask\.png.*ids 3"):
        mapper(sample)
    Image.fromarray(np.zeros((5, 5), np.uint8)).save(tmp_path / "small.png")
    with pytest.raises(ValueError, match=r"small\.png.*5x5.*6x8"):
        SemSegEvalMapper(_cfg())({**sample, "sem_seg_file_name": str(tmp_path / "small.png")})
    with pytest.raises(FileNotFoundError, match="gone.png"):
        SemSegEvalMapper(_cfg())({**sample, "sem_seg_file_name": str(tmp_path / "gone.png")})


@pytest.mark.parametrize(
    "fill, expected", [("zero", (0, 0, 0)), ("mean", (124, 116, 104))]  # rounded PIXEL_MEAN
)
def test_train_mapper_pads_crops_black_by_default(sample, fill, expected):
    cfg = _cfg(crop=(40, 40))  # the 6x8 image (at most 12x16 after rescaling) is padded
    cfg.INPUT.COLOR_JITTER = False
    if fill != "zero":
        cfg.INPUT.CROP.PAD_FILL = fill
    out = WSSSDatasetMapper(cfg, is_train=True)(sample)
    padded = out["image"][:, ~out["valid_mask"]]
    assert padded.shape[1] > 0
    assert (padded == torch.tensor(expected, dtype=torch.uint8)[:, None]).all()
    # Real pixels are never the fill colour here (the image is red and blue).
    real = out["image"][:, out["valid_mask"]]
    assert not (real == torch.tensor(expected, dtype=torch.uint8)[:, None]).all(dim=0).any()


def test_train_mapper_rejects_an_unknown_pad_fill():
    cfg = _cfg()
    cfg.INPUT.CROP.PAD_FILL = "grey"
    with pytest.raises(ValueError, match="INPUT.CROP.PAD_FILL"):
        WSSSDatasetMapper(cfg, is_train=True)


@pytest.mark.parametrize("crop", [(20, 20), (4, 4)])  # padded, and cut from a larger image
def test_supervised_mapper_moves_the_mask_with_the_image(sample, crop):
    cfg = _cfg(crop=crop)
    cfg.MODEL.META_ARCHITECTURE = "BMPSupervised"
    cfg.INPUT.DATASET_MAPPER_NAME = "supervised"
    mapper = build_train_mapper(cfg)
    assert isinstance(mapper, SupervisedDatasetMapper)
    seen_blue = False
    for _ in range(8):
        out = mapper(sample)
        image, mask, valid = out["image"], out["sem_seg"], out["valid_mask"]
        assert mask.shape == valid.shape == image.shape[-2:] and mask.dtype == torch.long
        assert (mask[~valid] == 255).all()
        assert valid.all() or crop == (20, 20)
        # The image is red on the left (class 0 there) and blue on the right (class 3): the mask
        # follows each pixel, flips and rescales included (up to the one ignored corner pixel).
        red, blue = image[0] > 200, image[2] > 200
        assert set(mask[red & valid].unique().tolist()) <= {0, 255}
        assert set(mask[blue & valid].unique().tolist()) <= {3, 255}
        seen_blue |= bool((mask[blue & valid] == 3).any())
    assert seen_blue
    del sample["sem_seg_file_name"]
    with pytest.raises(ValueError, match="sem_seg_file_name"):
        mapper(sample)


def test_only_the_supervised_ceiling_may_train_on_masks():
    cfg = _cfg()
    assert type(build_train_mapper(cfg)) is WSSSDatasetMapper
    cfg.INPUT.DATASET_MAPPER_NAME = "supervised"  # masks for the weakly supervised BMP: refused
    with pytest.raises(ValueError, match="only 'BMPSupervised'"):
        build_train_mapper(cfg)
    cfg.INPUT.DATASET_MAPPER_NAME = "wsss"
    cfg.MODEL.META_ARCHITECTURE = "BMPSupervised"
    with pytest.raises(ValueError, match="DATASET_MAPPER_NAME"):
        build_train_mapper(cfg)
    cfg.INPUT.DATASET_MAPPER_NAME = "masks"
    with pytest.raises(ValueError, match="'wsss' or 'supervised'"):
        build_train_mapper(cfg)
