"""Training statistics to CSV, JSON lines and TensorBoard side by side, resumable."""

from __future__ import annotations

import csv
import json
from pathlib import Path


def _read_rows(path: Path) -> list[dict]:
    """The rows of a stats.jsonl; a half-written last line (a kill during the append) is dropped, not fatal."""
    rows = []
    lines = [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    for number, line in enumerate(lines):
        try:
            row = json.loads(line)
        except ValueError:
            if number == len(lines) - 1:
                break  # the interrupted append; the resumed run logs that step again
            from discovery.errors import UserError

            raise UserError(f"{path}: line {number + 1} is not JSON (the file was edited?); remove it or start a new run") from None
        if isinstance(row, dict) and "step" in row:
            rows.append(row)
    return rows


class StatsLogger:
    """Append one row of scalars per logging step.

    On resume the logs are cut back to ``resume_step`` so that a run continued from a
    checkpoint leaves the same files as an uninterrupted run.
    """

    def __init__(self, out_dir: str | Path, resume_step: int | None = None, tensorboard: bool = True):
        self.out_dir = Path(out_dir)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.jsonl_path = self.out_dir / "stats.jsonl"
        self.csv_path = self.out_dir / "stats.csv"
        self._rows: list[dict] = []
        if resume_step is not None and self.jsonl_path.exists():
            self._rows = [row for row in _read_rows(self.jsonl_path) if row["step"] <= resume_step]
        self._rewrite()
        self._writer = None
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self._writer = SummaryWriter(str(self.out_dir / "tensorboard"), purge_step=resume_step)
            except Exception:  # TensorBoard is optional at run time; CSV and JSON lines always work
                self._writer = None

    def _rewrite(self) -> None:
        from discovery.io import atomic_write_text

        atomic_write_text("".join(json.dumps(row) + "\n" for row in self._rows), self.jsonl_path)  # never half a file
        self._write_csv()

    def _write_csv(self) -> None:
        import io

        from discovery.io import atomic_write_text

        keys: list[str] = []
        for row in self._rows:
            keys.extend(k for k in row if k not in keys)
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=keys or ["step"], lineterminator="\n")
        writer.writeheader()
        writer.writerows(self._rows)
        atomic_write_text(buffer.getvalue(), self.csv_path, durable=False)

    def log(self, step: int, **scalars: float) -> None:
        row = {"step": int(step), **{k: float(v) for k, v in scalars.items()}}
        self._rows.append(row)
        with open(self.jsonl_path, "a", encoding="utf-8") as handle:
            handle.write(json.dumps(row) + "\n")
        self._write_csv()
        if self._writer is not None:
            for key, value in scalars.items():
                self._writer.add_scalar(key, float(value), int(step))

    @property
    def rows(self) -> list[dict]:
        return list(self._rows)

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
