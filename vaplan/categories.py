"""The 25 LLP event classes, defined once for the whole project (order of the LLP annotations)."""

from __future__ import annotations

CLASSES: tuple[str, ...] = (
    "Speech", "Car", "Cheering", "Dog", "Cat", "Frying_(food)", "Basketball_bounce",
    "Fire_alarm", "Chainsaw", "Cello", "Banjo", "Singing", "Chicken_rooster", "Violin_fiddle",
    "Vacuum_cleaner", "Baby_laughter", "Accordion", "Lawn_mower", "Motorcycle", "Helicopter",
    "Acoustic_guitar", "Telephone_bell_ringing", "Baby_cry_infant_cry", "Blender", "Clapping",
)
NUM_CLASSES = len(CLASSES)  # C = 25
NUM_SEGMENTS = 10  # T = 10 one-second segments per video
CLASS_INDEX: dict[str, int] = {name: i for i, name in enumerate(CLASSES)}
MODALITIES: tuple[str, ...] = ("audio", "visual")


def display_name(name: str) -> str:
    """Human-readable class name used in prompts ("Frying_(food)" -> "frying (food)")."""
    return name.replace("_", " ").lower()
