"""Validation of everything a user hands to sine: images, masks, class ids, files.

One layer shared by the predictor, the video predictor, the CLIs (demo/demo.py,
demo/demo_video.py, ``python -m sine.label``) and the web demo, so that an input is accepted,
converted or refused the same way everywhere. Every refusal is a :class:`UserInputError` whose
message names the input (``where``) and says how to fix it.

Images (:func:`read_image`) -> (H, W, 3) uint8 RGB:

* a file path (``str`` / ``os.PathLike``), a ``PIL.Image``, a numpy array or a torch tensor
  ((3, H, W) or (H, W, 3));
* EXIF orientation is applied (the image as a viewer shows it);
* 8-bit RGB / grayscale as is; palette images through their palette; CMYK converted to RGB;
  alpha composited onto white (what is visible), never silently dropped;
* 16-bit integer images scaled from 0..65535; 32-bit integer images whose values fit in
  0..65535 are taken as 16-bit, larger values are refused (no standard display range);
* float images must hold values in [0, 1] (scaled by 255); NaN / inf are refused;
* at most :data:`MAX_IMAGE_PIXELS` pixels (checked from the file header, before decoding).

Masks (:func:`read_masks`) -> (N, H, W) bool, one per object:

* bool arrays, 0/1 or 0/255 arrays, PNG files, torch tensors, ``PIL.Image`` objects; one mask,
  an (N, H, W) stack or a list of any of those;
* a 2-D mask with several non-zero values (a label map, e.g. a palette PNG) is split into one
  object per value, in increasing value order (255 is kept as an object; only
  :func:`masks_by_object_id`, for DAVIS-style video masks, ignores it as "void");
  an (H, W, 3) colour mask is split by colour (black = background), objects in reading order
  of their first pixel;
* soft masks (float values strictly between 0 and 1, or more than :data:`MAX_LABEL_VALUES`
  distinct values, as a JPEG mask has) are refused unless ``mask_threshold`` is given; with it
  they are binarised as ``value / dtype max >= mask_threshold`` (floats as they are) and a
  warning is logged.

Class ids (:func:`class_ids`): non-negative integers below 2**31; bools, floats and larger
values are refused.
"""
import glob
import logging
import os
import warnings
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

logger = logging.getLogger(__name__)

__all__ = [
    "IMAGE_EXTENSIONS",
    "MAX_IMAGE_PIXELS",
    "MAX_LABEL_VALUES",
    "UserInputError",
    "class_ids",
    "expand_image_inputs",
    "is_single_image",
    "masks_by_object_id",
    "read_image",
    "read_masks",
]

#: Largest accepted image, in pixels (10000 x 10000). Bigger images are refused before they
#: are decoded: resize them first (the model works at MODEL.SINE.PAD_SIZE anyway).
MAX_IMAGE_PIXELS = 10000 * 10000
#: A mask with more distinct non-zero values than this is a soft / lossy mask, not a label map.
MAX_LABEL_VALUES = 32
#: Largest accepted class id (class ids are stored as int64 but used as int32 indices).
MAX_CLASS_ID = 2**31 - 1
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
VOID_VALUE = 255  # DAVIS "void" label in video masks


class UserInputError(ValueError):
    """A user input that sine cannot use; the message names the input and the fix."""


# ---------------------------------------------------------------------------------- images
def _is_path(x) -> bool:
    return isinstance(x, (str, os.PathLike))


def _is_tensor(x) -> bool:
    return type(x).__module__.startswith("torch") and hasattr(x, "detach")


def _is_pil(x) -> bool:
    from PIL import Image

    return isinstance(x, Image.Image)


def is_single_image(x) -> bool:
    """True for one image (path, PIL image, array, tensor); False for a list of them."""
    return _is_path(x) or _is_pil(x) or isinstance(x, np.ndarray) or _is_tensor(x)


def _check_size(h: int, w: int, where: str) -> None:
    if h * w > MAX_IMAGE_PIXELS:
        raise UserInputError(
            f"{where} is {w}x{h} = {h * w / 1e6:.0f} megapixels, more than the maximum of "
            f"{MAX_IMAGE_PIXELS / 1e6:.0f}: resize it first (the model sees at most "
            "MODEL.SINE.PAD_SIZE pixels per side anyway)"
        )
    if h == 0 or w == 0:
        raise UserInputError(f"{where} is empty ({w}x{h} pixels)")


def _open_pil(path, where: str, kind: str):
    """Open an image file lazily (header only) with errors that name it."""
    from PIL import Image

    path = os.fspath(path)
    if not os.path.exists(path):
        raise UserInputError(f"{where}: {kind} file {path!r} does not exist")
    if os.path.isdir(path):
        raise UserInputError(f"{where}: {path!r} is a folder, not a {kind} file")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            old, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, None  # we check it ourselves
            try:
                img = Image.open(path)
            finally:
                Image.MAX_IMAGE_PIXELS = old
    except Exception as e:  # PIL raises UnidentifiedImageError, OSError, SyntaxError, ...
        raise UserInputError(
            f"{where}: cannot read {kind} file {path!r} ({type(e).__name__}: {e}); is it a "
            f"valid {'/'.join(x[1:] for x in IMAGE_EXTENSIONS)} file?"
        ) from e
    return img


def _load_pil(img, path, where: str, kind: str):
    """Decode a lazily opened image, with errors that name the file."""
    try:
        img.load()
    except Exception as e:
        raise UserInputError(
            f"{where}: cannot decode {kind} file {path!r} ({type(e).__name__}: {e}); the file "
            "is truncated or corrupt: re-export it"
        ) from e
    return img


def _pil_to_rgb(img, where: str) -> np.ndarray:
    """A decoded PIL image of any mode -> (H, W, 3) uint8 RGB (EXIF orientation applied)."""
    from PIL import ImageOps

    try:
        img = ImageOps.exif_transpose(img)
    except Exception:  # a broken EXIF block must not make a readable image unreadable
        logger.warning("%s: cannot apply its EXIF orientation; using the stored one", where)
    mode = img.mode
    if mode in ("RGB", "L", "1", "CMYK", "YCbCr", "LAB", "HSV"):
        return np.asarray(img.convert("RGB"))
    if mode in ("P", "PA"):
        return _array_to_rgb(np.asarray(img.convert("RGBA")), where)
    if mode in ("RGBA", "LA", "RGBa", "La"):
        return _array_to_rgb(np.asarray(img.convert("RGBA")), where)
    if mode.startswith("I;16") or mode in ("I", "F"):
        return _array_to_rgb(np.asarray(img), where)
    raise UserInputError(f"{where}: images of mode {mode!r} are not supported: save it as RGB")


def _check_unit_range(a: np.ndarray, where: str, kind: str, fix: str) -> None:
    """Float ``a`` must be finite and within [0, 1]; ``fix`` ends the error message."""
    if not np.isfinite(a).all():
        raise UserInputError(f"{where} has NaN or infinite values")
    lo, hi = float(a.min()), float(a.max())
    if lo < 0 or hi > 1:
        raise UserInputError(f"{where} is a float {kind} with values in [{lo:g}, {hi:g}]{fix}")


def _to_uint8(a: np.ndarray, where: str) -> np.ndarray:
    """Numbers of any dtype -> uint8, by the dtype's meaning (see the module docstring)."""
    if a.dtype == np.uint8:
        return a
    if a.dtype == bool:
        raise UserInputError(
            f"{where} is a bool array, which is a mask, not an image: give the RGB image"
        )
    if np.issubdtype(a.dtype, np.floating):
        _check_unit_range(a, where, "image", "; float images must be in [0, 1]: divide by 255 "
                          "(or its maximum), or convert it to uint8")
        return (a * 255).round().astype(np.uint8)
    if np.issubdtype(a.dtype, np.integer):
        lo, hi = int(a.min()), int(a.max())
        if lo < 0:
            raise UserInputError(
                f"{where} is a {a.dtype} image with negative values (min {lo}): convert it "
                "to uint8 0..255"
            )
        if a.dtype.itemsize == 1 or a.dtype.itemsize == 2 or hi <= 65535:
            if a.dtype.itemsize == 1:
                return a.astype(np.uint8)
            # 16-bit data (also 32-bit storage of 16-bit PNGs): scale the full range.
            return ((a.astype(np.uint32) * 255 + 32767) // 65535).astype(np.uint8)
        raise UserInputError(
            f"{where} is a {a.dtype} image with values up to {hi}, beyond 16 bits: there is no "
            "standard display range; scale it to uint8 0..255 yourself"
        )
    raise UserInputError(f"{where} has dtype {a.dtype}, which is not an image type")


def _array_to_rgb(a: np.ndarray, where: str) -> np.ndarray:
    """(H, W), (H, W, 1|3|4) array of any numeric dtype -> (H, W, 3) uint8."""
    if a.ndim == 3 and a.shape[2] == 1:
        a = a[..., 0]
    if a.ndim == 2:
        _check_size(*a.shape, where)
        a = _to_uint8(a, where)
        return np.repeat(a[..., None], 3, axis=2)
    if a.ndim != 3 or a.shape[2] not in (3, 4):
        hint = ""
        if a.ndim == 3 and a.shape[0] in (1, 3, 4):
            hint = " (channels first? use image.transpose(1, 2, 0))"
        raise UserInputError(
            f"{where} has shape {a.shape}: an image must be (H, W, 3) RGB, (H, W, 4) RGBA or "
            f"(H, W) grayscale{hint}"
        )
    _check_size(*a.shape[:2], where)
    a = _to_uint8(a, where)
    if a.shape[2] == 4:  # composite onto white: what the image shows, not the hidden colour
        alpha = a[..., 3:].astype(np.float32) / 255
        rgb = a[..., :3].astype(np.float32) * alpha + 255 * (1 - alpha)
        return rgb.round().astype(np.uint8)
    return a


def _tensor_to_numpy(t, channels_first: bool) -> np.ndarray:
    a = t.detach().cpu().numpy()
    if channels_first and a.ndim == 3 and a.shape[0] in (1, 3, 4) and a.shape[2] not in (1, 3, 4):
        a = a.transpose(1, 2, 0)
    return a


def read_image(image, where: str = "the image") -> np.ndarray:
    """Any supported image (see the module docstring) -> (H, W, 3) uint8 RGB, C-contiguous.

    Raises:
        UserInputError: the image cannot be read or converted; the message says why and how to
            fix it.
    """
    if _is_path(image):
        path = os.fspath(image)
        img = _open_pil(path, where, "image")
        _check_size(img.height, img.width, f"{where} ({path!r})")
        rgb = _pil_to_rgb(_load_pil(img, path, where, "image"), f"{where} ({path!r})")
    elif _is_pil(image):
        _check_size(image.height, image.width, where)
        rgb = _pil_to_rgb(image, where)
    elif _is_tensor(image):
        rgb = _array_to_rgb(_tensor_to_numpy(image, channels_first=True), where)
    elif isinstance(image, np.ndarray):
        rgb = _array_to_rgb(image, where)
    else:
        raise UserInputError(
            f"{where} is a {type(image).__name__}: give a file path, a PIL image, an (H, W, 3) "
            "uint8 numpy array or a (3, H, W) torch tensor"
        )
    # Copy: read-only views (PIL buffers) cannot become torch tensors without a warning.
    return np.array(rgb, dtype=np.uint8, order="C")


# ----------------------------------------------------------------------------------- masks
def _mask_source_to_array(m, where: str) -> Tuple[np.ndarray, bool]:
    """One mask item -> (array, is_lossy_file) without interpreting its values."""
    if _is_path(m):
        path = os.fspath(m)
        img = _load_pil(_open_pil(path, where, "mask"), path, where, "mask")
        lossy = path.lower().endswith((".jpg", ".jpeg")) or img.format == "JPEG"
        return _pil_mask_array(img), lossy
    if _is_pil(m):
        return _pil_mask_array(m), m.format == "JPEG"
    if _is_tensor(m):
        return _tensor_to_numpy(m, channels_first=False), False
    if isinstance(m, np.ndarray):
        return m, False
    raise UserInputError(
        f"{where} is a {type(m).__name__}: give a mask as a PNG path, a PIL image, a numpy "
        "array or a torch tensor"
    )


def _pil_mask_array(img) -> np.ndarray:
    """PIL mask: palette -> its indices (a label map), RGBA -> its colours, else its values."""
    if img.mode == "P":
        return np.asarray(img)
    if img.mode in ("RGBA", "LA", "PA"):
        return np.asarray(img.convert("RGBA"))[..., :3]
    if img.mode == "1":
        return np.asarray(img).astype(bool)
    if img.mode in ("RGB", "CMYK", "YCbCr"):
        return np.asarray(img.convert("RGB"))
    return np.asarray(img)


def _soft_mask_error(where: str, what: str, lossy: bool) -> UserInputError:
    jpeg = " JPEG is lossy: its edges get many grey values;" if lossy else ""
    return UserInputError(
        f"{where} is {what}, not a binary mask or label map.{jpeg} save it as a lossless PNG "
        "with 0 = background and one value per object, or binarise it explicitly with "
        "mask_threshold (--mask-threshold in the CLIs), e.g. 0.5 = half of the value range"
    )


def _binarise(a: np.ndarray, threshold: float, where: str, why: str) -> np.ndarray:
    scale = 1.0 if np.issubdtype(a.dtype, np.floating) else float(np.iinfo(a.dtype).max)
    logger.warning("%s is %s: binarised at mask_threshold=%g of its range", where, why, threshold)
    return (a.astype(np.float64) / scale) >= threshold


def _split_2d(a: np.ndarray, where: str, threshold: Optional[float],
              lossy: bool) -> List[np.ndarray]:
    """(H, W) mask of any dtype -> list of (H, W) bool objects (see the module docstring)."""
    if a.dtype == bool:
        return [a]
    if np.issubdtype(a.dtype, np.floating):
        _check_unit_range(a, where, "mask", ": float masks must be in [0, 1]; for a label map "
                          "use an integer array")
        if np.isin(a, (0.0, 1.0)).all():
            return [a > 0]
        if threshold is None:
            raise _soft_mask_error(where, "a soft float mask (values between 0 and 1)", lossy)
        return [_binarise(a, threshold, where, "a soft float mask")]
    if not np.issubdtype(a.dtype, np.integer):
        raise UserInputError(f"{where} has dtype {a.dtype}: give a bool or integer mask")
    if int(a.min()) < 0:
        raise UserInputError(f"{where} has negative values: 0 = background, > 0 = object")
    values = np.unique(a)
    values = values[values != 0]
    if len(values) <= 1:
        return [a > 0]
    if len(values) > MAX_LABEL_VALUES:
        if threshold is None:
            raise _soft_mask_error(where, f"a mask with {len(values)} distinct values", lossy)
        return [_binarise(a, threshold, where, f"a mask with {len(values)} distinct values")]
    if threshold is not None and lossy:
        return [_binarise(a, threshold, where, "a lossy (JPEG) mask")]
    return [a == v for v in values]


def _split_colours(a: np.ndarray, where: str, threshold, lossy) -> List[np.ndarray]:
    """(H, W, 3) colour mask: grey -> as 2-D, else one object per colour (black = none)."""
    if (a[..., 0] == a[..., 1]).all() and (a[..., 0] == a[..., 2]).all():
        return _split_2d(a[..., 0], where, threshold, lossy)
    flat = a.reshape(-1, 3)
    colours, first, inverse = np.unique(flat, axis=0, return_index=True, return_inverse=True)
    # Objects in reading order (first pixel top-left to bottom-right), as a person counts them.
    keep = sorted((i for i, c in enumerate(colours) if c.any()), key=lambda i: first[i])
    if len(keep) > MAX_LABEL_VALUES:
        if threshold is None:
            raise _soft_mask_error(where, f"a colour mask with {len(keep)} colours", lossy)
        return _split_2d(a.max(axis=2), where, threshold, lossy)
    inverse = inverse.reshape(a.shape[:2])
    return [inverse == i for i in keep]


def read_masks(masks, image_shape, where: str = "the mask",
               mask_threshold: Optional[float] = None) -> np.ndarray:
    """The masks of one image -> (N, H, W) bool, one row per object.

    Args:
        masks: one mask (path, PIL image, (H, W) / (H, W, 3) array or tensor), an (N, H, W)
            stack, or a list of those; label maps are split by value (module docstring).
        image_shape: (H, W, ...) of the image the masks belong to.
        where: how error messages name the masks, e.g. "reference 0".
        mask_threshold: binarise soft masks at this fraction of their value range (warning);
            None refuses them with the fix.
    Raises:
        UserInputError: a mask is unreadable, of another size, empty, soft (without
            ``mask_threshold``) or of an unsupported type.
    """
    hw = tuple(int(x) for x in image_shape[:2])
    if mask_threshold is not None and not 0 < float(mask_threshold) <= 1:
        raise UserInputError(f"mask_threshold must be in (0, 1], got {mask_threshold!r}")
    items = [masks] if not isinstance(masks, (list, tuple)) else list(masks)
    if not items:
        raise UserInputError(f"{where} has no mask: give at least one mask per image")
    objects: List[np.ndarray] = []
    for i, item in enumerate(items):
        name = f"mask {i} of {where}" if len(items) > 1 else where
        if _is_path(item):
            name = f"{name} ({os.fspath(item)!r})"
        a, lossy = _mask_source_to_array(item, name)
        if a.ndim == 3 and a.shape[2] == 1:
            a = a[..., 0]
        if a.ndim == 3 and a.shape[:2] == hw and a.shape[2] in (3, 4) and a.shape[1:] != hw:
            parts = _split_colours(a[..., :3], name, mask_threshold, lossy)
        elif a.ndim == 3 and a.shape[1:] == hw:  # an (N, H, W) stack: one object per row
            parts = []
            for j, row in enumerate(a):
                sub = _split_2d(row, f"{name} [{j}]", mask_threshold, lossy)
                parts.extend(sub if len(sub) == 1 else [np.any(sub, axis=0)])
        elif a.ndim == 2 and a.shape == hw:
            parts = _split_2d(a, name, mask_threshold, lossy)
        else:
            raise UserInputError(
                f"{name} has shape {tuple(a.shape)}, but its image is {hw[1]}x{hw[0]} (WxH), "
                f"i.e. masks must be ({hw[0]}, {hw[1]}), ({hw[0]}, {hw[1]}, 3) or "
                f"(N, {hw[0]}, {hw[1]}): masks must have the same height and width as their image"
            )
        for j, p in enumerate(parts):
            if not p.any():
                label = name if len(parts) == 1 else f"{name} [{j}]"
                raise UserInputError(f"{label} is empty: it has no foreground pixel")
        objects.extend(parts)
    return np.stack(objects).astype(bool, copy=False)


def masks_by_object_id(masks, image_shape, where: str = "masks",
                       mask_threshold: Optional[float] = None) -> Dict[int, np.ndarray]:
    """Video objects: ``{object id >= 1: mask}`` or one label map -> ``{id: (H, W) bool}``.

    A label map (array, tensor, PIL image or PNG path; a palette PNG as DAVIS annotations) gives
    object k for value k; 255 is DAVIS's "void" and ignored next to other values. A binary mask
    (one non-zero value, e.g. 0/255) is object 1.
    """
    if isinstance(masks, dict):
        if not masks:
            raise UserInputError(f"{where}: no object to track: give at least one object mask")
        out = {}
        for obj_id, mask in masks.items():
            if isinstance(obj_id, (bool, np.bool_)) or not isinstance(obj_id, (int, np.integer)) \
                    or obj_id < 1:
                raise UserInputError(f"{where}: object ids must be integers >= 1, got {obj_id!r}")
            m = read_masks([mask], image_shape, f"{where} (object {obj_id})", mask_threshold)
            if len(m) != 1:
                raise UserInputError(
                    f"{where} (object {obj_id}) holds {len(m)} objects (a label map): give one "
                    "binary mask per object id, or pass the label map itself instead of a dict"
                )
            out[int(obj_id)] = m[0]
        return out
    a, lossy = _mask_source_to_array(masks, where)
    if a.ndim == 3 and a.shape[2] == 1:
        a = a[..., 0]
    hw = tuple(int(x) for x in image_shape[:2])
    if a.ndim != 2:
        raise UserInputError(
            f"{where} has shape {tuple(a.shape)}: give an (H, W) label map (0 = background, "
            "k = object k) or a dict {object id: (H, W) mask}"
        )
    if a.shape != hw:
        raise UserInputError(
            f"{where} is {a.shape[1]}x{a.shape[0]} (WxH) but its frame is {hw[1]}x{hw[0]}: masks "
            "must have the same height and width as their frame"
        )
    if a.dtype == bool or (np.issubdtype(a.dtype, np.floating)):
        return {1: read_masks(a, hw, where, mask_threshold)[0]}
    if not np.issubdtype(a.dtype, np.integer):
        raise UserInputError(f"{where} has dtype {a.dtype}: give an integer label map")
    values = [int(v) for v in np.unique(a) if v != 0]
    if len(values) == 1:  # a binary mask (0/1, 0/255, ...): one object
        return {1: a > 0}
    values = [v for v in values if v != VOID_VALUE]
    if not values:
        raise UserInputError(f"{where} is empty: no object to track (all pixels are 0)")
    if len(values) > MAX_LABEL_VALUES:
        if mask_threshold is None:
            raise _soft_mask_error(where, f"a mask with {len(values)} distinct values", lossy)
        return {1: _binarise(a, mask_threshold, where, f"a mask with {len(values)} values")}
    return {v: a == v for v in values}


# ------------------------------------------------------------------------------- class ids
def class_ids(labels, count: int, where: str = "class ids") -> List[int]:
    """``count`` class ids -> list of int; refuses bools, floats, negatives and overflow."""
    if _is_tensor(labels):
        labels = labels.detach().cpu().tolist()
    elif isinstance(labels, np.ndarray):
        if labels.dtype.kind not in "iu":
            raise UserInputError(
                f"{where} must be integers, got a {labels.dtype} array {labels.tolist()}"
            )
        labels = labels.tolist()
    elif isinstance(labels, (int, np.integer)) and not isinstance(labels, (bool, np.bool_)):
        labels = [labels]
    if not isinstance(labels, (list, tuple)):
        raise UserInputError(f"{where} must be a list of integers, got {type(labels).__name__}")
    out = []
    for v in labels:
        if isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, np.integer)):
            raise UserInputError(
                f"{where} must be non-negative integers, got {v!r} ({type(v).__name__}) in "
                f"{list(labels)}"
            )
        if not 0 <= int(v) <= MAX_CLASS_ID:
            raise UserInputError(
                f"{where} must be integers in 0..{MAX_CLASS_ID}, got {int(v)} in {list(labels)}"
            )
        out.append(int(v))
    if len(out) != count:
        raise UserInputError(
            f"{where}: {len(out)} class id(s) {out} for {count} mask(s): give one class id per "
            "mask (a label map counts one mask per non-zero value)"
        )
    return out


# ---------------------------------------------------------------------------- image batches
LIST_FILE_EXTENSIONS = (".txt", ".lst", ".list")


def expand_image_inputs(specs: Sequence[str], option: str = "--input") -> List[str]:
    """Folders, globs, list files (.txt: one path per line) and files -> image paths.

    Folders give their image files (by extension, sorted); paths in a list file are relative to
    the list file. Duplicates are kept once, in first-seen order.

    Raises:
        UserInputError: a spec matches nothing, or a folder holds no image.
    """
    files: List[str] = []
    for spec in specs:
        spec = os.path.expanduser(os.fspath(spec))
        if os.path.isdir(spec):
            found = sorted(os.path.join(spec, f) for f in os.listdir(spec)
                           if f.lower().endswith(IMAGE_EXTENSIONS)
                           and os.path.isfile(os.path.join(spec, f)))
            if not found:
                raise UserInputError(
                    f"{option} {spec!r} is a folder without image files "
                    f"({', '.join(IMAGE_EXTENSIONS)})"
                )
            files.extend(found)
        elif os.path.isfile(spec) and spec.lower().endswith(LIST_FILE_EXTENSIONS):
            base = os.path.dirname(os.path.abspath(spec))
            with open(spec, encoding="utf-8") as f:
                lines = [ln.strip() for ln in f]
            entries = [ln for ln in lines if ln and not ln.startswith("#")]
            if not entries:
                raise UserInputError(f"{option} list file {spec!r} lists no file")
            files.extend(os.path.join(base, os.path.expanduser(e)) for e in entries)
        elif os.path.isfile(spec):
            files.append(spec)
        else:
            matches = sorted(m for m in glob.glob(spec) if os.path.isfile(m))
            if not matches:
                raise UserInputError(
                    f"{option} {spec!r} matches no file: give image files, a folder, a quoted "
                    "glob such as \"images/*.jpg\" or a .txt list of paths"
                )
            files.extend(matches)
    seen, unique = set(), []
    for f in files:
        key = os.path.abspath(f)
        if key not in seen:
            seen.add(key)
            unique.append(f)
    return unique
