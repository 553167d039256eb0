"""What a payload's IR may be: OpenVINO's own XML, whose weights are the payload's bytes, and nothing that
reads a file or sets the compiled model's options.

``Core.read_model(bytes, weights)`` picks a frontend by what the bytes are, not by what the caller meant:
handed an ONNX model in place of the IR's XML, it reads it with the ONNX frontend, and that reads the
external data the model names from the working directory (a forged ``forward.xml`` of ONNX bytes whose
initializer named ``secret.bin`` returned the file's bytes as the method's weights). So the XML must be
IR before OpenVINO sees it (`check_xml`): it starts ``<?xml`` (no ONNX, TensorFlow, TFLite or Paddle
model starts so; they are protobufs or flatbuffers), its root is ``<net>``, and it has no document type
(``<!DOCTYPE``, ``<!ENTITY``), which IR never has. The IR frontend itself reads only the weights it is
given: constants are offsets into the ``.bin`` part.

A read model must not carry ``runtime_options`` in its runtime info (`check_model`): the CPU plugin
applies them as compile properties (``INFERENCE_PRECISION_HINT``, ``KV_CACHE_PRECISION``, thread counts),
options the artifact's compile spec does not show and the spec's bounds do not cover.
"""

from __future__ import annotations

import re
from typing import Any

from pipeline.core.backend import LoweringError

_IR_START = b"<?xml"
_ROOT = re.compile(rb"<\?xml[^>]*\?>\s*<net[\s>]")
_DOCUMENT_TYPE = re.compile(rb"<!(DOCTYPE|ENTITY)", re.IGNORECASE)


def check_xml(xml: object, what: str) -> None:
    """A `LoweringError` naming ``what`` unless ``xml`` is OpenVINO IR: ``<?xml ...?>`` then ``<net>``, no DTD."""
    if not isinstance(xml, (bytes, bytearray)) or not xml.startswith(_IR_START):
        start = bytes(xml[:8]) if isinstance(xml, (bytes, bytearray)) else type(xml).__name__
        raise LoweringError(
            f"{what} is not OpenVINO IR: it starts {start!r}, not {_IR_START!r}; a payload holds "
            "IR only, never a model another frontend would read (ONNX reads files it names)."
        )
    if _DOCUMENT_TYPE.search(xml):
        raise LoweringError(f"{what} declares a document type (<!DOCTYPE or <!ENTITY), which OpenVINO IR never has.")
    if not _ROOT.match(xml):
        raise LoweringError(f"{what} is not OpenVINO IR: its root element is not <net>.")


def check_model(model: Any, what: str) -> None:
    """A `LoweringError` naming ``what`` if the read model carries ``runtime_options`` for the compiler."""
    if model.has_rt_info(["runtime_options"]):
        raise LoweringError(
            f"{what} carries runtime_options in its runtime info, which would set compile "
            "properties the compile spec does not show; a payload's IR carries none."
        )
