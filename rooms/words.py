"""The invite-code word list: 256 short, distinct, lowercase English words, so each word
carries 8 bits (magic-wormhole's PGP-list idea, our own list). Index = position; the list
is part of the wire contract (a code typed on one version must mean the same on the next):
append-only is not possible at 256, so never reorder or replace a word.
"""

from __future__ import annotations

__all__ = ["WORDS", "WORD_INDEX"]

WORDS: tuple[str, ...] = (
    "acorn", "adrift", "afford", "agenda", "airbag", "alarm", "album", "alpine", "amber",
    "ample", "anchor", "angle", "ankle", "apple", "apron", "arcade", "arctic", "arena",
    "armor", "arrow", "artist", "aspen", "atlas", "attic", "august", "autumn", "avenue",
    "award", "bacon", "badge", "bakery", "balcony", "bamboo", "banana", "banjo", "barley",
    "barrel", "basil", "basket", "beacon", "beaver", "bedrock", "beehive", "bell", "berry",
    "bicycle", "bison", "blossom", "bluebird", "bonfire", "boulder", "breeze", "brick",
    "bridge", "brook", "bubble", "bucket", "buffalo", "bugle", "button", "cabin", "cactus",
    "camel", "candle", "canoe", "canyon", "carpet", "carrot", "castle", "cedar", "cello",
    "cement", "chalk", "cherry", "chimney", "cider", "cinema", "circus", "citrus", "clover",
    "cobalt", "cocoa", "comet", "compass", "copper", "coral", "cotton", "cougar", "crayon",
    "crystal", "dahlia", "daisy", "dancer", "denim", "desert", "diesel", "dinner", "dolphin",
    "domino", "donkey", "dragon", "drum", "eagle", "easel", "echo", "elbow", "ember",
    "engine", "falcon", "feather", "fennel", "ferry", "fiddle", "finch", "fjord", "flute",
    "forest", "fossil", "fountain", "fox", "galaxy", "garden", "garlic", "geyser", "ginger",
    "glacier", "globe", "gopher", "granite", "grape", "gravel", "guitar", "hammock",
    "harbor", "harvest", "hazel", "helmet", "heron", "honey", "horizon", "husky", "igloo",
    "indigo", "iris", "island", "ivory", "jacket", "jaguar", "jelly", "jigsaw", "jungle",
    "kayak", "kernel", "kettle", "kiwi", "koala", "ladder", "lagoon", "lantern", "laurel",
    "lemon", "lentil", "lilac", "linen", "lizard", "lotus", "magnet", "mango", "maple",
    "marble", "meadow", "melon", "meteor", "mitten", "mosaic", "muffin", "mural", "nectar",
    "needle", "nickel", "nutmeg", "oasis", "ocean", "olive", "onion", "orbit", "orchid",
    "otter", "oyster", "paddle", "panda", "parcel", "parrot", "peanut", "pebble", "pepper",
    "piano", "pickle", "pigeon", "pillow", "pine", "planet", "plum", "pocket", "pony",
    "poppy", "potato", "prairie", "puffin", "pumpkin", "quartz", "quill", "rabbit", "radish",
    "raven", "reef", "ribbon", "river", "robin", "rocket", "saddle", "salmon", "sandal",
    "scarf", "shadow", "sierra", "silver", "sketch", "sparrow", "spruce", "stable", "summit",
    "sunset", "swallow", "teapot", "thunder", "tiger", "timber", "tomato", "topaz",
    "tractor", "trumpet", "tulip", "tundra", "turnip", "valley", "velvet", "violet",
    "volcano", "waffle", "walnut", "walrus", "willow", "window", "yogurt", "zebra",
)
assert len(WORDS) == 256 and len(set(WORDS)) == 256

WORD_INDEX: dict[str, int] = {w: i for i, w in enumerate(WORDS)}
