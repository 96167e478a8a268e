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
    brands: tuple[str, ...]  # commonest first
    variant: str = "none"  # key of VARIANTS
    coloured: bool = True


@dataclass(frozen=True)
class Top:
    name: str
    models: tuple[str, ...]  # model-line words, generic so that any brand of the top may use them
    leaves: tuple[Leaf, ...]
    numbered: bool = False  # model lines carry generation numbers ("Pro 14"), as in tech and shoes


TAXONOMY: tuple[Top, ...] = (
    Top("apparel",
        ("Classic", "Trail", "Runner", "Flex", "Cloud", "Court", "Heritage", "Tempo", "Glide", "Essential",
         "Original", "Swift", "Pulse", "Motion"),
        (Leaf("shoes.running", "Running Shoe", "running shoes", 95,
              ("Nike", "Adidas", "Asics", "New Balance", "Puma", "Brooks"), "shoe"),
         Leaf("shoes.sneakers", "Sneaker", "sneakers", 80, ("Nike", "Adidas", "Puma", "New Balance", "Vans"), "shoe"),
         Leaf("shoes.boots", "Hiking Boot", "hiking boots", 130,
              ("Columbia", "Salomon", "Merrell", "Timberland"), "shoe"),
         Leaf("jacket", "Rain Jacket", "rain jacket", 110,
              ("The North Face", "Columbia", "Patagonia", "Adidas", "Nike"), "clothing"),
         Leaf("jeans", "Slim Fit Jeans", "jeans", 65, ("Levi's", "Wrangler", "Lee", "Diesel"), "clothing"),
         Leaf("tshirt", "Cotton T-Shirt", "t-shirt", 25, ("Nike", "Adidas", "Uniqlo", "Levi's", "Puma"), "clothing")),
        numbered=True),
    Top("electronics",
        ("Pro", "Ultra", "Max", "Lite", "Edge", "Prime", "Neo", "Plus", "Wave", "Vision", "Nova", "One"),
        (Leaf("smartphone", "Smartphone", "smartphone", 420,
              ("Samsung", "Apple", "Xiaomi", "Google", "OnePlus", "Motorola"), "storage"),
         Leaf("audio.headphone", "Wireless Headphones", "wireless headphones", 120,
              ("Sony", "JBL", "Bose", "Sennheiser", "Apple", "Samsung")),
         Leaf("video.tv", "4K Smart TV", "smart tv", 600, ("Samsung", "LG", "Sony", "Philips", "TCL"), "tv", False),
         Leaf("tablet", "Tablet", "tablet", 350, ("Apple", "Samsung", "Lenovo", "Xiaomi"), "storage"),
         Leaf("clocks.smartwatch", "Smartwatch", "smartwatch", 230,
              ("Apple", "Samsung", "Garmin", "Huawei", "Amazfit")),
         Leaf("camera.photo", "Mirrorless Camera", "camera", 850,
              ("Sony", "Canon", "Nikon", "Fujifilm"), coloured=False)),
        numbered=True),
    Top("computers",
        ("Book", "Vision", "Aero", "Flex", "Core", "Studio", "Slim", "Nitro", "Zen", "Swift"),
        (Leaf("notebook", "Laptop", "laptop", 950, ("Lenovo", "HP", "Asus", "Acer", "Dell", "Apple"), "memory", False),
         Leaf("peripherals.monitor", "IPS Monitor", "monitor", 260, ("Dell", "LG", "Samsung", "Asus", "BenQ"), "screen",
              False),
         Leaf("peripherals.keyboard", "Mechanical Keyboard", "mechanical keyboard", 95,
              ("Logitech", "Razer", "Corsair", "Keychron")),
         Leaf("peripherals.mouse", "Wireless Mouse", "wireless mouse", 40,
              ("Logitech", "Razer", "Microsoft", "Corsair"))),
        numbered=True),
    Top("appliances",
        ("Series 4", "Series 6", "Series 8", "Compact", "Plus", "Pro", "Eco", "Smart", "Deluxe"),
        (Leaf("kitchen.refrigerators", "Fridge Freezer", "fridge freezer", 720,
              ("Bosch", "Samsung", "LG", "Liebherr", "Whirlpool"), coloured=False),
         Leaf("kitchen.coffee_machine", "Espresso Machine", "coffee machine", 260,
              ("DeLonghi", "Philips", "Krups", "Nespresso")),
         Leaf("kitchen.blender", "Blender", "blender", 85, ("Philips", "Braun", "Ninja", "Tefal")),
         Leaf("environment.vacuum", "Cordless Vacuum Cleaner", "cordless vacuum", 320,
              ("Dyson", "Philips", "Bosch", "Xiaomi", "Samsung")),
         Leaf("personal.hair_dryer", "Hair Dryer", "hair dryer", 55, ("Dyson", "Philips", "Braun", "Remington")))),
    Top("home",
        ("Classic", "Pro", "Essentials", "Nordic", "Signature", "Everyday", "Heritage", "Studio"),
        (Leaf("kitchen.cookware", "Non-Stick Frying Pan", "frying pan", 45,
              ("Tefal", "WMF", "Le Creuset", "Lodge"), "pan"),
         Leaf("kitchen.knives", "Chef's Knife", "chef knife", 70, ("Zwilling", "WMF", "Victorinox", "Wusthof"),
              coloured=False),
         Leaf("bedding", "Duvet Cover Set", "duvet cover", 50, ("IKEA", "Zara Home", "H&M Home")),
         Leaf("furniture.chair", "Office Chair", "office chair", 190, ("IKEA", "Herman Miller", "Steelcase", "Hbada")),
         Leaf("decor.lamp", "Table Lamp", "table lamp", 45, ("IKEA", "Philips", "Brightech")))),
    Top("beauty",
        ("Hydra", "Pure", "Ultra", "Glow", "Daily", "Intense", "Sensitive", "Velvet", "Radiance"),
        (Leaf("skincare", "Hydrating Face Cream", "face cream", 25,
              ("Nivea", "L'Oreal", "Olay", "Clinique", "La Roche-Posay"), "volume", False),
         Leaf("makeup.lipstick", "Matte Lipstick", "lipstick", 15, ("Maybelline", "L'Oreal", "MAC", "NYX")),
         Leaf("fragrance", "Eau de Parfum", "perfume", 75, ("Lancome", "Dior", "Hugo Boss", "Calvin Klein"), "volume",
              False),
         Leaf("haircare", "Repair Shampoo", "shampoo", 10, ("Garnier", "L'Oreal", "Pantene", "Head & Shoulders"),
              "bottle", False))),
    Top("sports",
        ("Pro", "Sport", "Trail", "Active", "Core", "Summit", "Explorer", "Power", "Elite"),
        (Leaf("fitness.dumbbells", "Adjustable Dumbbell Set", "dumbbells", 120, ("Bowflex", "Decathlon", "Reebok"),
              coloured=False),
         Leaf("fitness.yoga_mat", "Yoga Mat", "yoga mat", 30, ("Decathlon", "Manduka", "Reebok", "Lululemon")),
         Leaf("bicycle", "Mountain Bike", "mountain bike", 650, ("Trek", "Giant", "Specialized", "Decathlon")),
         Leaf("camping.tent", "2-Person Tent", "tent", 140, ("Coleman", "Decathlon", "MSR", "Vango")))),
    Top("kids",
        ("City", "Classic", "Creator", "Explorer", "Adventure", "Friends", "Discovery"),
        (Leaf("toys.construction", "Building Set", "building set", 45, ("LEGO", "Playmobil", "Mega Bloks"),
              coloured=False),
         Leaf("toys.doll", "Fashion Doll", "doll", 25, ("Mattel", "Hasbro", "MGA")),
         Leaf("carriage", "Baby Stroller", "stroller", 320, ("Chicco", "Joie", "Bugaboo", "Cybex")))),
    Top("accessories",
        ("Classic", "Urban", "Voyager", "Heritage", "Metro", "Original", "Edge", "Nomad"),
        (Leaf("bag.backpack", "Backpack", "backpack", 75, ("Samsonite", "Herschel", "Eastpak", "The North Face")),
         Leaf("wallet", "Leather Wallet", "leather wallet", 40, ("Fossil", "Tommy Hilfiger", "Bellroy")),
         Leaf("watch", "Analog Watch", "watch", 150, ("Casio", "Fossil", "Seiko", "Tissot")),
         Leaf("sunglasses", "Polarized Sunglasses", "sunglasses", 125, ("Ray-Ban", "Oakley", "Polaroid")))),
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

    # Brands: Zipf-like shares within a leaf, and a per-brand price premium shared across leaves.
    all_brands = sorted({b for lf in leaves for b in lf.brands})
    brand_premium = dict(zip(all_brands, rng.lognormal(0.0, 0.25, len(all_brands)).tolist()))
    brand_idx = np.empty(n, dtype=np.int64)
    for li, lf in enumerate(leaves):
        rows = np.flatnonzero(leaf == li)
        w = 1.0 / np.arange(1, len(lf.brands) + 1)
        brand_idx[rows] = rng.choice(len(lf.brands), len(rows), p=w / w.sum())
    brand = [leaves[li].brands[b] for li, b in zip(leaf.tolist(), brand_idx.tolist())]

    median = np.array([lf.median_price for lf in leaves])[leaf]
    premium = np.array([brand_premium[b] for b in brand])
    raw = median * premium * rng.lognormal(0.0, 0.4, n)
    # Shop prices end in .99 above 5; cheap items keep their cents.
    price_cents = np.where(raw >= 5, np.floor(raw) * 100 + 99, np.maximum(np.round(raw * 100), 99)).astype(np.int64)

    # Zipf popularity over a random ranking of all products.
    popularity = np.empty(n)
    popularity[rng.permutation(n)] = 1.0 / np.arange(1, n + 1) ** 1.05
    popularity *= leaf_weight[leaf] / np.bincount(leaf, weights=popularity, minlength=len(leaves))[leaf]

    names, colours = [], []
    draws = zip(
        leaf.tolist(), brand, rng.integers(0, len(COLOURS), n).tolist(), rng.integers(0, 1_000_000, n).tolist(),
        rng.integers(0, 60, n).tolist(), rng.random(n).tolist(),
    )
    for li, brand_name, colour_i, model_i, number, variant_u in draws:
        lf, top = leaves[li], TAXONOMY[leaf_top[li]]
        model = top.models[model_i % len(top.models)]
        if top.numbered and number >= 20:  # two thirds of such models carry a number
            model = f"{model} {number}"
        colour = COLOURS[colour_i] if lf.coloured else ""
        variants = VARIANTS[lf.variant]
        parts = [f"{brand_name} {model} {lf.noun}", colour, variants[int(variant_u * len(variants))]]
        names.append(", ".join(p for p in parts if p))
        colours.append(colour.lower())

    return Catalog(
        product_id=product_id, leaf=leaf, brand=[b.lower() for b in brand], price_cents=price_cents, name=names,
        colour=colours, leaves=leaves, leaf_top=leaf_top, category_id=category_id,
        leaf_weight=leaf_weight, popularity=popularity,
    )
