"""The words, prices and calendar the synthetic shop draws from (shaped after the real Online Retail data),
and how to draw from a distribution."""

from __future__ import annotations

import numpy as np

# ---------------------------------------------------------------------------------------------------------
# Word lists. A kit is a set of products that are bought together when they share a design
# ("RED SPOTTY TEACUP" + "RED SPOTTY SAUCER"); its accessories are design-less products bought with any
# design of the kit (batteries with fairy lights). Items are listed lead first: the earlier an item, the
# more often it is the anchor of a basket and the more often it is added as a complement.
# Each item is (noun, typical price in pence); nouns are unique across kits so descriptions are unique.
# ---------------------------------------------------------------------------------------------------------
KITS: tuple[tuple[str, tuple[tuple[str, int], ...], tuple[tuple[str, int], ...], bool], ...] = (
    (
        "TEA SET",
        (
            ("TEACUP", 125),
            ("SAUCER", 85),
            ("TEAPOT", 495),
            ("MILK JUG", 295),
            ("SUGAR BOWL", 250),
            ("TEA COSY", 375),
            ("SIDE PLATE", 165),
        ),
        (),
        False,
    ),
    (
        "FAIRY LIGHTS",
        (
            ("FAIRY LIGHTS", 425),
            ("LANTERN", 375),
            ("T-LIGHT HOLDER", 255),
            ("LIGHT GARLAND", 495),
            ("STRING LIGHTS", 595),
        ),
        (
            ("PACK OF 4 AA BATTERIES", 165),
            ("PACK OF 12 AA BATTERIES", 395),
            ("PACK OF 6 AAA BATTERIES", 225),
            ("LED TEA LIGHTS SET OF 6", 295),
            ("FAIRY LIGHTS TIMER PLUG", 450),
        ),
        False,
    ),
    (
        "GIFT WRAP",
        (
            ("GIFT WRAP", 42),
            ("GIFT TAGS", 85),
            ("RIBBON REEL", 165),
            ("GIFT BAG", 125),
            ("GIFT BOX", 195),
            ("TISSUE PAPER", 65),
        ),
        (("CLEAR STICKY TAPE", 55), ("GIFT WRAP SCISSORS", 165), ("DOUBLE SIDED TAPE", 75)),
        False,
    ),
    (
        "BAKING",
        (
            ("CAKE STAND", 995),
            ("CAKE CASES", 55),
            ("CAKE TIN", 425),
            ("BAKING SET", 495),
            ("CUPCAKE PICKS", 85),
            ("ICING BAG", 145),
        ),
        (("BAKING PAPER ROLL", 125), ("SET OF 3 MEASURING SPOONS", 165)),
        False,
    ),
    (
        "LUNCH",
        (("LUNCH BAG", 165), ("LUNCH BOX", 195), ("WATER BOTTLE", 255), ("SNACK POTS", 145), ("SANDWICH WRAP", 85)),
        (("ICE PACK", 125),),
        False,
    ),
    (
        "PARTY",
        (
            ("PAPER PLATES", 85),
            ("PAPER CUPS", 65),
            ("PAPER NAPKINS", 85),
            ("PAPER BUNTING", 295),
            ("PARTY BAGS", 125),
            ("PARTY HATS", 125),
            ("PAPER STRAWS", 55),
        ),
        (("PARTY BALLOONS ASSORTED", 65), ("BIRTHDAY CANDLES PACK OF 24", 42)),
        False,
    ),
    (
        "CHRISTMAS",
        (
            ("CHRISTMAS BAUBLE", 125),
            ("TREE TOPPER", 295),
            ("ADVENT CALENDAR", 495),
            ("CHRISTMAS CRACKERS", 395),
            ("CHRISTMAS STOCKING", 250),
            ("HANGING DECORATION", 85),
        ),
        (("BAUBLE HOOKS PACK OF 50", 42), ("CHRISTMAS TREE STAND", 795)),
        True,
    ),
    (
        "CANDLES",
        (
            ("SCENTED CANDLE", 295),
            ("CANDLE HOLDER", 195),
            ("CANDLE PLATE", 165),
            ("PILLAR CANDLE", 250),
            ("CANDLE TIN", 125),
        ),
        (("BOX OF MATCHES", 39), ("CANDLE SNUFFER", 250)),
        False,
    ),
    (
        "KITCHEN LINEN",
        (("APRON", 495), ("OVEN GLOVE", 295), ("TEA TOWEL", 165), ("POT HOLDER", 145), ("CHILDRENS APRON", 295)),
        (),
        False,
    ),
    (
        "STATIONERY",
        (
            ("NOTEBOOK", 165),
            ("PENCIL CASE", 195),
            ("PENCILS", 65),
            ("ERASER", 42),
            ("RULER", 55),
            ("PENCIL SHARPENER", 42),
        ),
        (("PACK OF 12 HB PENCILS", 85),),
        False,
    ),
    (
        "PANTRY",
        (
            ("STORAGE JAR", 295),
            ("BISCUIT TIN", 375),
            ("TEA, COFFEE, SUGAR TINS", 695),
            ("BREAD BIN", 1275),
            ("SPICE TINS", 425),
        ),
        (),
        False,
    ),
    (
        "GARDEN",
        (
            ("WATERING CAN", 425),
            ("PLANT POT", 195),
            ("GARDENING GLOVES", 250),
            ("HAND TROWEL", 295),
            ("SEED TIN", 165),
            ("KNEELING PAD", 295),
        ),
        (("PLANT LABELS PACK OF 20", 65), ("GARDEN TWINE", 125)),
        False,
    ),
    (
        "BATHROOM",
        (("WASH BAG", 295), ("SOAP DISH", 165), ("TOOTHBRUSH HOLDER", 195), ("HAND TOWEL", 250), ("BATH MAT", 595)),
        (),
        False,
    ),
    ("PHOTO", (("PHOTO FRAME", 295), ("PHOTO ALBUM", 595), ("MEMO BOARD", 495), ("PHOTO CLIPS", 125)), (), False),
    (
        "GAMES",
        (
            ("JIGSAW PUZZLE", 295),
            ("BUILDING BLOCKS", 595),
            ("MEMORY GAME", 195),
            ("COLOURING BOOK", 165),
            ("CRAYONS", 85),
        ),
        (("PACK OF 24 COLOURING PENCILS", 165),),
        False,
    ),
    (
        "WARMERS",
        (
            ("HOT WATER BOTTLE", 395),
            ("HAND WARMER", 185),
            ("MUG COSY", 165),
            ("FLEECE THROW", 895),
            ("KNITTED SLIPPERS", 495),
        ),
        (),
        False,
    ),
    (
        "DINING",
        (
            ("DINNER PLATE", 250),
            ("CEREAL BOWL", 195),
            ("MUG", 165),
            ("BEAKER", 125),
            ("CUTLERY SET", 425),
            ("PLACEMATS", 295),
            ("COASTERS", 125),
        ),
        (),
        False,
    ),
    (
        "BAGS",
        (("JUMBO BAG", 195), ("SHOPPER", 250), ("PURSE", 165), ("KEY RING", 85), ("CHARLOTTE BAG", 85)),
        (),
        False,
    ),
    (
        "CARDS",
        (("GREETING CARD", 42), ("BIRTHDAY CARD", 42), ("ENVELOPES", 65), ("WRITING SET", 295), ("POSTCARDS", 55)),
        (),
        False,
    ),
    (
        "DOORWAY",
        (("DOOR MAT", 795), ("DOORSTOP", 425), ("COAT RACK", 995), ("KEY HOLDER", 495), ("DOOR SIGN", 210)),
        (),
        False,
    ),
    (
        "SEWING",
        (("SEWING KIT", 295), ("SEWING BOX", 795), ("PIN CUSHION", 165), ("TAPE MEASURE", 125), ("THIMBLE", 85)),
        (("PACK OF 50 SEWING NEEDLES", 65),),
        False,
    ),
    (
        "PICNIC",
        (
            ("PICNIC BASKET", 1495),
            ("PICNIC BLANKET", 995),
            ("PICNIC CUPS", 295),
            ("PICNIC PLATES", 395),
            ("COOL BAG", 495),
        ),
        (),
        False,
    ),
    (
        "BABY",
        (("BABY BIB", 165), ("BABY BLANKET", 795), ("SOFT TOY", 295), ("BABY MOBILE", 495), ("BOOTIES", 250)),
        (),
        False,
    ),
    (
        "HANGING HEARTS",
        (("HANGING HEART", 255), ("WICKER HEART", 165), ("HEART GARLAND", 295), ("HEART WALL DECORATION", 250)),
        (),
        False,
    ),
)
COLOURS = (
    "RED",
    "BLUE",
    "PINK",
    "GREEN",
    "IVORY",
    "BLACK",
    "WHITE",
    "YELLOW",
    "PURPLE",
    "ORANGE",
    "CREAM",
    "GREY",
    "TURQUOISE",
    "LILAC",
    "MINT",
    "SILVER",
    "GOLD",
    "NAVY",
    "CORAL",
    "TEAL",
)
PATTERNS = (
    "SPOTTY",
    "POLKADOT",
    "RETROSPOT",
    "STRIPE",
    "GINGHAM",
    "REGENCY",
    "VINTAGE",
    "PAISLEY",
    "FLORAL",
    "HEARTS",
    "STARS",
    "CHECK",
    "DOILY",
    "LACE",
    "DAISY",
    "ROSES",
    "PARISIENNE",
    "SCANDI",
    "HERRINGBONE",
    "TARTAN",
    "ZIGZAG",
    "DITSY",
    "ORIENTAL",
    "BAROQUE",
    "TOILE",
)
MOTIFS = (
    "OWL",
    "BIRDIE",
    "BUTTERFLY",
    "WOODLAND",
    "DOLLY GIRL",
    "SPACEBOY",
    "UNION JACK",
    "CIRCUS PARADE",
    "JUNGLE",
    "SKULL",
    "APPLE",
    "CHERRY",
    "STRAWBERRY",
    "LEMON",
    "ROBIN",
    "REINDEER",
    "RABBIT",
    "SWALLOW",
    "HEN HOUSE",
    "PONY",
    "RAINBOW",
    "BICYCLE",
    "SAILOR",
    "MERMAID",
    "DINOSAUR",
    "FOX",
    "HEDGEHOG",
    "CACTUS",
    "POPPY'S",
    "LOVEBIRD",
)
SYNONYMS = {
    "COLOURING": "COLORING",
    "CHILDRENS": "CHILDREN'S",
    "T-LIGHT": "TEA LIGHT",
    "POLKADOT": "POLKA DOT",
    "TEACUP": "TEA CUP",
    "DOORSTOP": "DOOR STOP",
    "RETROSPOT": "RETRO SPOT",
    "GREY": "GRAY",
}

# Service lines the real data mixes with products: (code, description, median price in pence, price spread).
SERVICES = (
    ("POST", "POSTAGE", 1800, 0.4),
    ("DOT", "DOTCOM POSTAGE", 15000, 0.8),
    ("M", "Manual", 250, 1.5),
    ("BANK CHARGES", "Bank Charges", 1500, 0.0),
    ("AMAZONFEE", "AMAZON FEE", 300000, 0.7),
    ("C2", "CARRIAGE", 5000, 0.0),
)
NOTES = ("damaged", "check", "?", "missing", "wet damaged", "sold as set on dotcom", "wrongly coded")

COUNTRIES = (
    "United Kingdom",
    "Germany",
    "France",
    "EIRE",
    "Spain",
    "Belgium",
    "Switzerland",
    "Portugal",
    "Netherlands",
    "Italy",
    "Norway",
    "Australia",
    "Finland",
    "Channel Islands",
    "Sweden",
    "Denmark",
    "Austria",
    "Japan",
    "Poland",
    "Cyprus",
    "USA",
)
CUSTOMER_COUNTRY_P = np.array([900, 22, 20, 8, 8, 6, 5, 5, 3, 4, 3, 3, 3, 2, 2, 2, 2, 2, 2, 2, 1], float)
GUEST_COUNTRY_P = np.where(np.arange(len(COUNTRIES)) == 0, 9700.0, CUSTOMER_COUNTRY_P)  # guests are nearly all UK

QUANTITIES = np.array([1, 2, 3, 4, 5, 6, 8, 10, 12, 16, 20, 24, 25, 36, 48, 72, 96, 144])
QUANTITY_P = np.array([148, 82, 37, 38, 12, 41, 13, 22, 61, 4.3, 5, 24, 5.1, 3.8, 6.1, 2, 1.5, 1])
HOURS = np.arange(7, 21)
HOUR_P = np.array([4, 88, 338, 479, 563, 772, 711, 663, 764, 535, 276, 77, 35, 8], float)
WEEKDAY_P = np.array([1.0, 1.05, 0.97, 1.08, 0.85, 0.0, 0.7])  # Mon..Sun: the shop never invoices on Saturdays
MONTH_P = np.array([0.8, 0.75, 0.95, 0.8, 1.0, 0.95, 0.95, 0.95, 1.3, 1.45, 1.8, 1.2])
SEASON_MONTHS = np.array([False] * 8 + [True] * 4)  # Christmas kits sell from September to December

ACCESSORY_ODDS = 0.6  # relative to complement_prob: batteries join fairy lights less often than the lantern does


def cumulative(weights: np.ndarray) -> np.ndarray:
    """The normalized cumulative distribution of weights, for draw."""
    cdf = np.cumsum(weights, dtype=np.float64)
    return cdf / cdf[-1]


def draw(cdf: np.ndarray, u: np.ndarray) -> np.ndarray:
    """The indices that uniform numbers u pick from a cumulative distribution."""
    return np.minimum(np.searchsorted(cdf, u, side="right"), len(cdf) - 1)
