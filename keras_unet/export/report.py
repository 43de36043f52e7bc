"""What an export produced: one `ExportReport` per exported file."""

from __future__ import annotations

from dataclasses import dataclass, field

from keras_unet.export.verify import Agreement


@dataclass
class ExportReport:
    """What an export produced and measured.

    Attributes:
        path: The exported file (or folder).
        precision: The TFLite precision, or the format (`saved_model`,
            `onnx`).
        size_bytes: File size.
        ops: Operator names in the graph.
        agreement: Verification against the Keras model.
        latency_ms: Median single-image latency, `{"keras": .., "tflite": ..}`.
        sidecar: The JSON sidecar path.
    """

    path: str
    precision: str
    size_bytes: int
    ops: list[str]
    agreement: Agreement
    latency_ms: dict = field(default_factory=dict)
    sidecar: str = ""

    def format(self) -> str:
        """One human-readable line."""
        a = self.agreement
        latency = ", ".join(f"{k} {v:.1f} ms" for k, v in self.latency_ms.items())
        return (
            f"{self.precision:<12} {self.size_bytes / 1e6:7.2f} MB  mask agreement "
            f"{a.mask_agreement:.4%}  mask IoU {a.mask_iou:.4f}  max|diff| "
            f"{a.max_abs_diff:.2e}  {latency}  -> {self.path}"
        )
