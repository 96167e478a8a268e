"""Journey analytics over the event store: sessions, graph, funnels, paths, drop-offs, attribution,
retention and personas. Each analysis returns a typed result with to_dict/to_frame/figure."""

from journeymap.journeys._base import Filters, Journeys, save_segment

__all__ = ["Filters", "Journeys", "save_segment"]
