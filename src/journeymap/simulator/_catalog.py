"""The simulated shop's catalog: a category tree, brands, and products with prices and titles.

Built deterministically from the seed; product popularity is Zipf-like so that, as in real
shops, a few products collect most of the views.
"""

from __future__ import annotations

from bisect import bisect
from dataclasses import dataclass, field

import numpy as np

COLOURS = ("Black", "White", "Grey", "Navy", "Blue", "Red", "Green", "Beige", "Pink", "Silver")
VARIANTS = {
    "shoe": tuple(f"Size {s}" for s in range(36, 47)),
    "clothing": ("Size XS", "Size S", "Size M", "Size L", "Size XL", "Size XXL"),
    "storage": ("64GB", "128GB", "256GB", "512GB"),
    "memory": ("8GB RAM, 256GB SSD", "16GB RAM, 512GB SSD", "32GB RAM, 1TB SSD"),
    "screen": ('24"', '27"', '32"'),
    "tv": ('43"', '50"', '55"', '65"'),
    "pan": ("20 cm", "24 cm", "28 cm"),
    "volume": ("30 ml", "50 ml", "100 ml"),
    "bottle": ("250 ml", "400 ml"),
    "none": ("",),
}


@dataclass(frozen=True)
class Leaf:
    """A leaf category; nouns feed product titles, search queries and review texts."""

    code: str  # the part after the top category: "shoes.running"
    noun: str  # in titles: "Running Shoe"
    query: str  # what people type: "running shoes"
    median_price: float
    variant: str = "none"  # key of VARIANTS
    coloured: bool = True


@dataclass(frozen=True)
class Top:
    name: str
    brands: tuple[str, ...]
    models: tuple[str, ...]  # words combined into model names
    leaves: tuple[Leaf, ...]


TAXONOMY: tuple[Top, ...] = (
    Top("apparel", ("Nike", "Adidas", "Puma", "Asics", "New Balance", "Levi's", "Columbia", "Reebok"),
        ("Air Zoom", "Pegasus", "Ultra", "Boost", "Classic", "Trail", "Runner", "Flex", "Cloud", "Court",
         "Heritage", "Tempo", "Glide", "Essential", "Original"),
        (Leaf("shoes.running", "Running Shoe", "running shoes", 95, "shoe"),
         Leaf("shoes.sneakers", "Sneaker", "sneakers", 80, "shoe"),
         Leaf("shoes.boots", "Hiking Boot", "hiking boots", 130, "shoe"),
         Leaf("jacket", "Rain Jacket", "rain jacket", 110, "clothing"),
         Leaf("jeans", "Slim Fit Jeans", "jeans", 65, "clothing"),
         Leaf("tshirt", "Cotton T-Shirt", "t-shirt", 25, "clothing"))),
    Top("electronics", ("Samsung", "Apple", "Xiaomi", "Sony", "Huawei", "LG", "JBL", "OnePlus"),
        ("Galaxy", "Nova", "Pro", "Ultra", "Max", "Lite", "Note", "Edge", "Prime", "Neo", "Plus", "Wave"),
        (Leaf("smartphone", "Smartphone", "smartphone", 420, "storage"),
         Leaf("audio.headphone", "Wireless Headphones", "wireless headphones", 120),
         Leaf("video.tv", "4K Smart TV", "smart tv", 600, "tv", coloured=False),
         Leaf("tablet", "Tablet", "tablet", 350, "storage"),
         Leaf("clocks.smartwatch", "Smartwatch", "smartwatch", 230),
         Leaf("camera.photo", "Mirrorless Camera", "camera", 850, coloured=False))),
    Top("computers", ("Lenovo", "HP", "Asus", "Acer", "Dell", "Logitech", "MSI"),
        ("Book", "Vision", "Aero", "Flex", "Core", "Studio", "Slim", "Nitro", "Zen", "Swift"),
        (Leaf("notebook", "Laptop", "laptop", 950, "memory", coloured=False),
         Leaf("peripherals.monitor", "IPS Monitor", "monitor", 260, "screen", coloured=False),
         Leaf("peripherals.keyboard", "Mechanical Keyboard", "mechanical keyboard", 95),
         Leaf("peripherals.mouse", "Wireless Mouse", "wireless mouse", 40))),
    Top("appliances", ("Bosch", "Philips", "DeLonghi", "Dyson", "Tefal", "Braun", "Samsung"),
        ("Series 4", "Series 6", "Series 8", "Compact", "Plus", "Pro", "Eco", "Smart", "Deluxe"),
        (Leaf("kitchen.refrigerators", "Fridge Freezer", "fridge freezer", 720, coloured=False),
         Leaf("kitchen.coffee_machine", "Espresso Machine", "coffee machine", 260),
         Leaf("kitchen.blender", "Blender", "blender", 85),
         Leaf("environment.vacuum", "Cordless Vacuum Cleaner", "cordless vacuum", 320),
         Leaf("personal.hair_dryer", "Hair Dryer", "hair dryer", 55))),
    Top("home", ("IKEA", "Tefal", "Zwilling", "WMF", "Lodge", "Le Creuset"),
        ("Classic", "Pro", "Essentials", "Nordic", "Signature", "Everyday", "Heritage", "Studio"),
        (Leaf("kitchen.cookware", "Non-Stick Frying Pan", "frying pan", 45, "pan"),
         Leaf("kitchen.knives", "Chef's Knife", "chef knife", 70, coloured=False),
         Leaf("bedding", "Duvet Cover Set", "duvet cover", 50),
         Leaf("furniture.chair", "Office Chair", "office chair", 190),
         Leaf("decor.lamp", "Table Lamp", "table lamp", 45))),
    Top("beauty", ("L'Oreal", "Nivea", "Maybelline", "Clinique", "Garnier", "Olay", "Lancome"),
        ("Hydra", "Revitalift", "Pure", "Ultra", "Glow", "Daily", "Intense", "Sensitive", "Velvet"),
        (Leaf("skincare", "Hydrating Face Cream", "face cream", 25, "volume", coloured=False),
         Leaf("makeup.lipstick", "Matte Lipstick", "lipstick", 15),
         Leaf("fragrance", "Eau de Parfum", "perfume", 75, "volume", coloured=False),
         Leaf("haircare", "Repair Shampoo", "shampoo", 10, "bottle", coloured=False))),
    Top("sports", ("Decathlon", "Reebok", "Under Armour", "Coleman", "Trek", "Bowflex"),
        ("Pro", "Sport", "Trail", "Active", "Core", "Summit", "Explorer", "Power", "Elite"),
        (Leaf("fitness.dumbbells", "Adjustable Dumbbell Set", "dumbbells", 120, coloured=False),
         Leaf("fitness.yoga_mat", "Yoga Mat", "yoga mat", 30),
         Leaf("bicycle", "Mountain Bike", "mountain bike", 650),
         Leaf("camping.tent", "2-Person Tent", "tent", 140))),
    Top("kids", ("LEGO", "Mattel", "Hasbro", "Chicco", "Fisher-Price"),
        ("City", "Classic", "Creator", "Explorer", "Adventure", "Friends", "Discovery"),
        (Leaf("toys.construction", "Building Set", "building set", 45, coloured=False),
         Leaf("toys.doll", "Fashion Doll", "doll", 25),
         Leaf("carriage", "Baby Stroller", "stroller", 320))),
    Top("accessories", ("Samsonite", "Fossil", "Ray-Ban", "Casio", "Herschel"),
        ("Classic", "Urban", "Voyager", "Heritage", "Metro", "Original", "Edge", "Nomad"),
        (Leaf("bag.backpack", "Backpack", "backpack", 75),
         Leaf("wallet", "Leather Wallet", "leather wallet", 40),
         Leaf("watch", "Analog Watch", "watch", 150),
         Leaf("sunglasses", "Polarized Sunglasses", "sunglasses", 125))),
)
TOP_NAMES = tuple(t.name for t in TAXONOMY)


@dataclass
class Catalog:
    """Products as parallel arrays (index = product number) plus per-leaf sampling tables."""

    product_id: np.ndarray  # int64
    leaf: np.ndarray  # int32, index into leaves
    brand: list[str]  # lower-case, as in REES46
    price_cents: np.ndarray  # int64; prices are kept in cents so CSV and Parquet agree exactly
    name: list[str]
    colour: list[str]
    leaves: list[Leaf]
    leaf_top: np.ndarray  # int32, index into TAXONOMY
    category_id: np.ndarray  # int64 per leaf
    leaf_weight: np.ndarray  # float64 per leaf: share of the shop's traffic
    popularity: np.ndarray  # float64 per product, sums to leaf_weight within each leaf
    # (leaf, price sensitivity) -> (cumulative weights, product numbers), filled by prepare();
    # leaf -1 is the whole catalog
    tables: dict[tuple[int, float], tuple[list[float], list[int]]] = field(default_factory=dict, repr=False)

    @property
    def leaf_codes(self) -> list[str]:
        """Dotted category code per leaf: "apparel.shoes.running"."""
        return [f"{TAXONOMY[self.leaf_top[i]].name}.{lf.code}" for i, lf in enumerate(self.leaves)]

    def prepare(self, sensitivities: set[float]) -> None:
        """Precompute the sampling tables for each price sensitivity in use."""
        price = self.price_cents / 100.0
        for a in sorted(sensitivities):
            weight = self.popularity * price ** (-a)
            for leaf in range(-1, len(self.leaves)):
                members = np.arange(len(self.leaf)) if leaf < 0 else np.flatnonzero(self.leaf == leaf)
                self.tables[(leaf, a)] = (np.cumsum(weight[members]).tolist(), members.tolist())

    def pick(self, leaf: int, sensitivity: float, u: float) -> int:
        """The product drawn by uniform u in [0, 1) from a leaf (-1: whole catalog)."""
        cum, members = self.tables[(leaf, sensitivity)]
        return members[min(bisect(cum, u * cum[-1]), len(members) - 1)]


def build_catalog(rng: np.random.Generator, n_products: int) -> Catalog:
    leaves = [lf for t in TAXONOMY for lf in t.leaves]
    leaf_top = np.array([ti for ti, t in enumerate(TAXONOMY) for _ in t.leaves], dtype=np.int32)
    # Leaf traffic shares vary by seed; every leaf keeps at least a handful of products.
    leaf_weight = rng.lognormal(0.0, 0.5, len(leaves))
    leaf_weight /= leaf_weight.sum()
    leaf = np.concatenate([
        np.repeat(np.arange(len(leaves)), 3),
        rng.choice(len(leaves), n_products - 3 * len(leaves), p=leaf_weight),
    ]).astype(np.int32)
    leaf.sort(kind="stable")
    n = len(leaf)
    product_id = 1_000_000 + rng.choice(9_000_000, n, replace=False).astype(np.int64)
    category_id = 2_053_013_552_000_000_000 + np.sort(rng.choice(10**9, len(leaves), replace=False))

    # Brands: Zipf-like shares within a top category, and a per-brand price premium.
    brand_premium = {b: float(rng.lognormal(0.0, 0.25)) for t in TAXONOMY for b in t.brands}
    brand_idx = np.empty(n, dtype=np.int64)
    for ti, t in enumerate(TAXONOMY):
        rows = np.flatnonzero(leaf_top[leaf] == ti)
        w = 1.0 / np.arange(1, len(t.brands) + 1)
        brand_idx[rows] = rng.choice(len(t.brands), len(rows), p=w / w.sum())

    median = np.array([lf.median_price for lf in leaves])[leaf]
    premium = np.array([brand_premium[TAXONOMY[leaf_top[leaf[i]]].brands[brand_idx[i]]] for i in range(n)])
    raw = median * premium * rng.lognormal(0.0, 0.4, n)
    # Shop prices end in .99 above 5; cheap items keep their cents.
    price_cents = np.where(raw >= 5, np.floor(raw) * 100 + 99, np.maximum(np.round(raw * 100), 99)).astype(np.int64)

    # Zipf popularity over a random ranking of all products.
    popularity = np.empty(n)
    popularity[rng.permutation(n)] = 1.0 / np.arange(1, n + 1) ** 1.05
    popularity *= leaf_weight[leaf] / np.bincount(leaf, weights=popularity, minlength=len(leaves))[leaf]

    colour_idx = rng.integers(0, len(COLOURS), n)
    model_a = rng.integers(0, 1_000_000, n)
    model_num = rng.integers(0, 60, n)
    variant_u = rng.random(n)
    brands, names, colours = [], [], []
    for i in range(n):
        lf = leaves[leaf[i]]
        top = TAXONOMY[leaf_top[leaf[i]]]
        brand = top.brands[brand_idx[i]]
        model = top.models[model_a[i] % len(top.models)]
        if model_num[i] >= 20:  # two thirds of models carry a generation number
            model = f"{model} {model_num[i]}"
        colour = COLOURS[colour_idx[i]] if lf.coloured else ""
        variants = VARIANTS[lf.variant]
        parts = [f"{brand} {model} {lf.noun}", colour, variants[int(variant_u[i] * len(variants))]]
        names.append(", ".join(p for p in parts if p))
        brands.append(brand.lower())
        colours.append(colour.lower())

    return Catalog(
        product_id=product_id, leaf=leaf, brand=brands, price_cents=price_cents, name=names,
        colour=colours, leaves=leaves, leaf_top=leaf_top, category_id=category_id,
        leaf_weight=leaf_weight, popularity=popularity,
    )
