"""shopfusion: e-commerce product search with hybrid retrieval.

Index a catalog in a BM25 index and a vector index, search with both and fuse the scores with weights
chosen for each query's intent, re-rank another engine's results, and adapt the models to new product
domains. Start with `Client`:

    >>> from shopfusion import Client                 # doctest: +SKIP
    >>> client = Client("var/index")                  # doctest: +SKIP
    >>> client.index("catalog.jsonl")                 # doctest: +SKIP
    >>> client.search("cordless drill", k=5)          # doctest: +SKIP
"""

from shopfusion.client import Client
from shopfusion.config import Settings, load_settings
from shopfusion.errors import ShopfusionError
from shopfusion.types import (
    AttributeFilter,
    Candidate,
    Facet,
    FacetBucket,
    Facets,
    Filters,
    Hit,
    Intent,
    LegScore,
    Page,
    Product,
    Results,
)

__version__ = "0.1.0"

__all__ = ["AttributeFilter", "Candidate", "Client", "Facet", "FacetBucket", "Facets", "Filters", "Hit", "Intent",
           "LegScore", "Page", "Product", "Results", "Settings", "ShopfusionError", "load_settings"]
