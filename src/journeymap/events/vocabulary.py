"""The canonical event-type vocabulary and the journey stages each type belongs to.

Adapters map their source's names onto these types; analytics group types into stages
(discover -> consider -> intend -> convert -> retain). Both can be extended or changed in the
config file's ``[event_types]`` and ``[stages]`` tables.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from journeymap.exceptions import ConfigError

STAGES: tuple[str, ...] = ("discover", "consider", "intend", "convert", "retain")

# Ordered roughly along the journey; GA4's recommended e-commerce events map onto these.
DEFAULT_STAGE_OF: dict[str, str] = {
    "page_view": "discover",
    "search": "discover",
    "promotion_view": "discover",
    "product_list_view": "discover",
    "product_view": "consider",
    "add_to_wishlist": "consider",
    "add_to_cart": "intend",
    "remove_from_cart": "intend",
    "view_cart": "intend",
    "begin_checkout": "intend",
    "add_shipping_info": "intend",
    "add_payment_info": "intend",
    "purchase": "convert",
    "refund": "retain",
    "review": "retain",
}
EVENT_TYPES: tuple[str, ...] = tuple(DEFAULT_STAGE_OF)


@dataclass(frozen=True)
class Vocabulary:
    """Known event types, their stages, and aliases from raw names to canonical ones."""

    stage_of: Mapping[str, str] = field(default_factory=lambda: dict(DEFAULT_STAGE_OF))
    aliases: Mapping[str, str] = field(default_factory=dict)

    @property
    def event_types(self) -> tuple[str, ...]:
        return tuple(self.stage_of)

    def canonical(self, name: str) -> str | None:
        """The canonical type for a raw or canonical name, or None when unknown."""
        name = self.aliases.get(name, name)
        return name if name in self.stage_of else None

    @classmethod
    def from_config(
        cls,
        custom: Sequence[str] = (),
        aliases: Mapping[str, str] | None = None,
        stages: Mapping[str, Sequence[str]] | None = None,
    ) -> Vocabulary:
        stage_of = dict(DEFAULT_STAGE_OF)
        for name in custom:
            stage_of.setdefault(str(name), "consider")
        if stages:
            for stage, names in stages.items():
                if stage not in STAGES:
                    raise ConfigError(
                        f"Unknown stage '{stage}' in the config's [stages] table; "
                        f"expected one of {', '.join(STAGES)}."
                    )
                for name in names:
                    stage_of[str(name)] = stage
        aliases = dict(aliases or {})
        for raw, target in aliases.items():
            if target not in stage_of:
                raise ConfigError(
                    f"The config maps event type '{raw}' to '{target}', which is not a known event "
                    f"type; add it under [event_types] custom = [...] or map to one of "
                    f"{', '.join(stage_of)}."
                )
        return cls(stage_of=stage_of, aliases=aliases)
