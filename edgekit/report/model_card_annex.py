"""The model card's map onto the EU AI Act's technical-documentation headings (Annex IV).

Regulation (EU) 2024/1689, Annex IV "Technical documentation referred to in Article 11(1)", points 1-9
(http://data.europa.eu/eli/reg/2024/1689/oj; text read at https://www.aiactblog.nl/en/ai-act/bijlage/4).
For each point: which card sections hold material for it, and what the provider must still write. Annex IV is
required for high-risk systems; whether a system is high-risk is the provider's determination, not edgekit's."""

from __future__ import annotations

from typing import Any

ANNEX_IV_SOURCE = ("Regulation (EU) 2024/1689 (AI Act), Annex IV, points 1-9; "
                   "http://data.europa.eu/eli/reg/2024/1689/oj")
PARTLY, PROVIDER_ONLY = "partly covered", "provider must write"

# point, heading (abridged from Annex IV), card sections that hold material for it, what the provider must add
_POINTS: list[tuple[str, str, tuple[str, ...], str]] = [
    ("1", "General description of the AI system (intended purpose, provider, versions, interaction with hardware "
          "and software, forms placed on the market, hardware, user interface, instructions for use)",
     ("intended_purpose", "model", "on_device", "traceability"),
     "provider name, the version of the system as a whole, the product and hardware it ships in, the user "
     "interface and instructions for use for the deployer"),
    ("2", "Detailed description of the elements of the AI system and of the process for its development (methods, "
          "design specifications, architecture, data requirements, human-oversight assessment, pre-determined "
          "changes, validation and testing, cybersecurity)",
     ("model", "training", "data", "evaluation", "formats"),
     "design rationale and assumptions, data labelling and cleaning procedures, human-oversight assessment "
     "(Article 14), pre-determined changes, cybersecurity measures"),
    ("3", "Detailed information about the monitoring, functioning and control of the AI system (capabilities and "
          "limitations, accuracy for persons or groups, foreseeable unintended outcomes and risks, human "
          "oversight, input data specifications)",
     ("evaluation", "formats", "limitations", "on_device"),
     "accuracy for the specific persons or groups the system is used on, foreseeable unintended outcomes and "
     "risks, human-oversight measures"),
    ("4", "Description of the appropriateness of the performance metrics for the specific AI system",
     ("evaluation", "formats"), "why these metrics fit the intended purpose"),
    ("5", "Detailed description of the risk management system in accordance with Article 9", (),
     "the whole section"),
    ("6", "Description of relevant changes made by the provider to the system through its lifecycle",
     ("traceability",), "the change history; this card records one build (hashes, tool versions) to anchor it"),
    ("7", "List of the harmonised standards applied (or the other solutions adopted)", (), "the whole section"),
    ("8", "Copy of the EU declaration of conformity (Article 47)", (), "the whole section"),
    ("9", "Detailed description of the system in place to evaluate the AI system's performance in the "
          "post-market phase (Article 72), including the post-market monitoring plan",
     (), "the whole section; the bundle's golden inputs/outputs can serve as an on-device regression check"),
]


def annex_iv_map(card: dict[str, Any]) -> dict[str, Any]:
    """Per Annex IV point: its heading, status, the card sections with material for it, what is left to write.
    A point whose only material is unknown here (e.g. no intended purpose) counts as the provider's."""
    rows = []
    for point, heading, sections, todo in _POINTS:
        known = [s for s in sections if _known(card.get(s))]
        status = PARTLY if known else PROVIDER_ONLY
        rows.append({"point": point, "heading": heading, "status": status, "card_sections": known,
                     "provider_must_write": todo})
    return {"source": ANNEX_IV_SOURCE,
            "scope": "Annex IV applies to high-risk AI systems; whether this one is high-risk is for the provider "
                     "to determine.",
            "points": rows}


def _known(value: Any) -> bool:
    """Whether a card section holds something edgekit knows (not only 'to be filled' placeholders)."""
    if isinstance(value, dict):
        return any(_known(v) for v in value.values())
    if isinstance(value, list):
        return any(_known(v) for v in value)
    if isinstance(value, str):
        return not value.startswith(("to be filled", "unknown", "none:", "not measured"))
    return value is not None
