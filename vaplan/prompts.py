"""Prompt sets for the CLIP (visual) and CLAP (audio) teachers (paper Tables 3-4)."""

from __future__ import annotations

from vaplan.categories import CLASSES, display_name

VISUAL_PROMPTS: dict[str, str] = {
    "VP1": "This photo contains the {}",
    "VP2": "This photo contains the scene of {}",
    "VP3": "This photo contains the visual scene of {}",
    "VP4": "This is a photo of the {}",
}
AUDIO_PROMPTS: dict[str, str] = {
    "AP1": "This is a sound of {}",
    "AP2": "This sound contains the {}",
}
PROMPTS: dict[str, str] = {**VISUAL_PROMPTS, **AUDIO_PROMPTS}


def prompt_modality(prompt_id: str) -> str:
    """'visual' for VP*, 'audio' for AP*; unknown ids raise naming the known ones."""
    if prompt_id in VISUAL_PROMPTS:
        return "visual"
    if prompt_id in AUDIO_PROMPTS:
        return "audio"
    raise ValueError(f"unknown prompt id {prompt_id!r}; expected one of {sorted(PROMPTS)}")


def prompt_texts(prompt_id: str) -> list[str]:
    """The 25 prompt sentences of one prompt set, in class order."""
    prompt_modality(prompt_id)
    return [PROMPTS[prompt_id].format(display_name(name)) for name in CLASSES]
