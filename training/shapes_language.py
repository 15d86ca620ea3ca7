"""What the shapes world's captions and edit instructions say, in English and in Russian.

English keeps the shipped model's caption ("a red circle on a blue background"). Russian
takes the grammatical form each slot needs: nominative for the shape's colour
("красный круг"), prepositional after "на" ("на синем фоне"), instrumental after "сделай"
("сделай фон жёлтым"); the three shapes are masculine, so the masculine forms serve all.
Russian writers often type е for ё; `plain_e` gives that spelling, and training shows both.
"""

from __future__ import annotations

from training.shapes_world import Scene

LANGUAGES = ("en", "ru")

RU_SHAPES = {"circle": "круг", "square": "квадрат", "triangle": "треугольник"}
RU_NOMINATIVE = {
    "red": "красный",
    "green": "зелёный",
    "blue": "синий",
    "yellow": "жёлтый",
    "purple": "фиолетовый",
    "orange": "оранжевый",
    "white": "белый",
    "black": "чёрный",
}
RU_PREPOSITIONAL = {
    "red": "красном",
    "green": "зелёном",
    "blue": "синем",
    "yellow": "жёлтом",
    "purple": "фиолетовом",
    "orange": "оранжевом",
    "white": "белом",
    "black": "чёрном",
}
RU_INSTRUMENTAL = {
    "red": "красным",
    "green": "зелёным",
    "blue": "синим",
    "yellow": "жёлтым",
    "purple": "фиолетовым",
    "orange": "оранжевым",
    "white": "белым",
    "black": "чёрным",
}


def plain_e(text: str) -> str:
    """The same words as most people type them, ё as е."""
    return text.replace("ё", "е")


def caption(scene: Scene, language: str) -> str:
    """'a red circle on a blue background' / 'красный круг на синем фоне'."""
    if language == "en":
        return scene.caption
    return f"{RU_NOMINATIVE[scene.colour]} {RU_SHAPES[scene.shape]} на {RU_PREPOSITIONAL[scene.background]} фоне"


def instruction(source: Scene, attribute: str, value: str, language: str) -> str:
    """How a user asks for one change to `source`: its background, its shape's colour, or its shape."""
    if language == "en":
        if attribute == "background":
            return f"make the background {value}"
        if attribute == "colour":
            return f"make the {source.shape} {value}"
        return f"turn the {source.shape} into a {value}"
    if attribute == "background":
        return f"сделай фон {RU_INSTRUMENTAL[value]}"
    if attribute == "colour":
        return f"сделай {RU_SHAPES[source.shape]} {RU_INSTRUMENTAL[value]}"
    return f"преврати {RU_SHAPES[source.shape]} в {RU_SHAPES[value]}"


def english_words() -> dict[str, str]:
    """Each Russian word of the world (every case form, both spellings of ё) -> its English word."""
    pairs = {"фон": "background", "фоне": "background", "на": "on", "сделай": "make", "преврати": "turn", "в": "into"}
    pairs.update({russian: english for english, russian in RU_SHAPES.items()})
    for forms in (RU_NOMINATIVE, RU_PREPOSITIONAL, RU_INSTRUMENTAL):
        pairs.update({russian: english for english, russian in forms.items()})
    return {**pairs, **{plain_e(russian): english for russian, english in pairs.items()}}
