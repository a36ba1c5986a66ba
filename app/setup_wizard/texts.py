"""What the setup wizard says: the model licence, download progress and time left in words."""

from __future__ import annotations

from pathlib import Path

from engine.preflight import size_text
from engine.store import DownloadProgress

SECONDS_PER_MINUTE = 60
SECONDS_PER_HOUR = 3600
MB = 1_000_000

LICENCE_HTML = """
<p><b>The LLaMA-Omni weights are for academic, non-commercial use only.</b></p>
<p>ICTNLP's <a href="https://huggingface.co/ICTNLP/Llama-3.1-8B-Omni">Llama-3.1-8B-Omni</a> may be used,
changed and shared for research and study. You may <b>not</b> use it, or anything made from it,
commercially. Credit the authors (cite the LLaMA-Omni paper) and share changed versions under the same
terms, in the spirit of CC&nbsp;BY-NC-SA&nbsp;4.0.</p>
<p>The model is built on Meta's Llama&nbsp;3.1, so the
<a href="https://www.llama.com/llama3_1/license/">Llama 3.1 Community License</a> and its Acceptable Use
Policy apply as well.</p>
<p>The speech encoder (OpenAI Whisper large-v3) is MIT-licensed. The unit vocoder is published by Meta's
fairseq project under its own terms.</p>
<p>OmniTalk itself is open source (Apache-2.0); these terms are about the model files it downloads.</p>
"""


def time_left(seconds: float) -> str:
    if seconds < SECONDS_PER_MINUTE:
        return "less than a minute left"
    if seconds < SECONDS_PER_HOUR:
        return f"about {round(seconds / SECONDS_PER_MINUTE)} min left"
    hours, rest = divmod(int(seconds), SECONDS_PER_HOUR)
    return f"about {hours} h {rest // SECONDS_PER_MINUTE} min left"


def progress_text(p: DownloadProgress) -> tuple[str, str]:
    """("model-00001-of-00004.safetensors (2 of 9)", "45% · 35.2 MB/s · about 6 min left")."""
    name = f"{Path(p.file).name} ({p.file_index + 1} of {p.n_files})"
    stats = []
    if p.file_total:
        stats.append(f"{100 * p.file_done / p.file_total:.0f}% of {size_text(p.file_total)}")
    else:
        stats.append(size_text(p.file_done))
    if p.speed_bps > 0:
        stats.append(f"{p.speed_bps / MB:.1f} MB/s")
    if p.eta_s is not None:
        stats.append(time_left(p.eta_s))
    return name, " · ".join(stats)
