"""Vocabularies of a Taobao-Live-like platform (Chinese and English) and the text attributes drawn from them.

Latents choose the keywords: premium or budget words follow an item's price level, "爆款"/"hot" its appeal, the
discount phrase its discount depth, anchor tags the anchor's skill and reach, room titles the room's attractiveness.
Some worlds (memf.simulate.worlds) name more latents: an item's colour in its title, an anchor's field and audience.
Brand, shop and nickname choices add realistic nuisance variation. All brands and shops are invented.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Category:
    """A commodity category: display names, median price (CNY), sampling weight and the hue of its photos."""

    zh: str
    en: str
    median_price: float
    weight: float
    hue: float


#: Apparel-heavy, like Taobao Live's market share.
CATEGORIES: tuple[Category, ...] = (
    Category("连衣裙", "dress", 189.0, 9.0, 0.92),
    Category("T恤", "T-shirt", 69.0, 8.0, 0.55),
    Category("卫衣", "hoodie", 129.0, 6.0, 0.62),
    Category("针织衫", "knit sweater", 159.0, 6.0, 0.08),
    Category("羽绒服", "down jacket", 599.0, 5.0, 0.60),
    Category("大衣", "wool coat", 699.0, 4.0, 0.07),
    Category("牛仔裤", "jeans", 139.0, 6.0, 0.61),
    Category("半身裙", "skirt", 119.0, 5.0, 0.85),
    Category("衬衫", "shirt", 109.0, 5.0, 0.50),
    Category("运动鞋", "sneakers", 299.0, 4.0, 0.00),
    Category("女包", "handbag", 259.0, 3.0, 0.10),
    Category("童装套装", "kids set", 99.0, 3.0, 0.15),
    Category("睡衣", "pajamas", 89.0, 2.0, 0.80),
    Category("面霜", "face cream", 229.0, 2.0, 0.45),
    Category("口红", "lipstick", 159.0, 2.0, 0.98),
    Category("项链", "necklace", 399.0, 1.5, 0.14),
    Category("零食礼盒", "snack box", 59.0, 1.5, 0.12),
)

PREMIUM_BRANDS: tuple[str, ...] = (
    "LUMIÈRE", "墨白 MOBAI", "Cashmere House", "云锦 YUNJIN", "Atelier Nine", "素问 SUWEN", "NORTH LANE",
    "织梦 ZHIMENG", "Maison Qing", "锦瑟",
)
MID_BRANDS: tuple[str, ...] = (
    "南岸 Southbank", "木槿 MUJIN", "Cotton Lane", "简约派", "ONE DAY", "森屿 SENYU", "Urban Fox", "青柠 LIME",
    "拾光 Shiguang", "Blue Harbor", "暖阳", "柚子家",
)
BUDGET_BRANDS: tuple[str, ...] = (
    "小鹿优选", "Happy Mart", "源头工厂", "百搭屋", "DailyWear", "衣橱日记", "优品汇", "9块9好物",
)
SHOP_SUFFIXES: tuple[str, ...] = ("官方店", "服饰专营店", "旗舰直营", "的小店", "工厂店", " Store", " Official")

PREMIUM_WORDS: tuple[str, ...] = ("真丝", "羊绒", "高端", "重磅", "设计师款", "premium", "100%桑蚕丝", "进口面料")
BUDGET_WORDS: tuple[str, ...] = ("百搭", "平价", "学生党", "基础款", "budget", "宽松", "显瘦", "ins风")
HOT_WORDS: tuple[str, ...] = ("爆款", "明星同款", "热卖", "hot", "new", "新款", "网红", "回购率超高")
COLD_WORDS: tuple[str, ...] = ("清仓", "库存", "basic", "日常", "常规款")
SEASONS: tuple[str, ...] = ("2021秋冬", "2021秋季", "早秋", "秋冬新款", "Autumn 2021", "冬季")

#: Discount phrases from shallow to deep (index = depth quartile).
DISCOUNT_TIERS: tuple[tuple[str, ...], ...] = (
    ("领券立减5元", "limited coupon", "关注送运费险", "包邮"),
    ("满199减20", "第二件9折", "Free shipping", "限时9折"),
    ("满300减50", "第二件半价", "2件8折", "limited coupon ¥50 off"),
    ("买一送一", "满300减100", "5折秒杀", "Buy 1 Get 1", "前100名半价"),
)

#: Anchor field (with its sampling weight) -> the anchor categories it goes with.
BROADCASTER_FIELDS: tuple[tuple[str, float, tuple[str, ...]], ...] = (
    ("服饰穿搭", 10.0, ("女装", "男装", "全品类")), ("女装", 8.0, ("女装", "大码女装")),
    ("美妆护肤", 3.0, ("美妆", "个护")), ("鞋包配饰", 2.0, ("鞋包", "配饰")), ("母婴童装", 2.0, ("童装", "母婴")),
    ("珠宝饰品", 1.0, ("珠宝", "配饰")), ("美食", 1.0, ("食品", "全品类")), ("Fashion", 1.5, ("女装", "男装")),
)
#: What each anchor field sells (English category names of :data:`CATEGORIES`): the ``fit`` world's match of an
#: anchor's field with an item's category.
FIELD_SELLS: dict[str, tuple[str, ...]] = {
    "服饰穿搭": ("dress", "T-shirt", "hoodie", "knit sweater", "down jacket", "wool coat", "jeans", "skirt", "shirt",
             "pajamas"),
    "女装": ("dress", "knit sweater", "wool coat", "skirt", "shirt"),
    "美妆护肤": ("face cream", "lipstick"),
    "鞋包配饰": ("sneakers", "handbag", "necklace"),
    "母婴童装": ("kids set", "pajamas", "snack box"),
    "珠宝饰品": ("necklace", "handbag"),
    "美食": ("snack box",),
    "Fashion": ("dress", "T-shirt", "hoodie", "jeans", "sneakers", "handbag"),
}
#: Audience price-level tags of an anchor, from budget to premium (``fit`` world; index = quartile).
AUDIENCE_TAGS: tuple[tuple[str, ...], ...] = (
    ("学生党福利", "平价好物", "budget picks"), ("性价比", "实惠"), ("品质生活", "精致"), ("高端客群", "轻奢", "luxury"),
)


@dataclass(frozen=True)
class Colour:
    """A colour family of the ``cross_modal`` world: its words and the hue of a product photo showing it."""

    zh: str
    en: str
    hue: float


#: Well-separated hues, so a photo's mean hue tells its colour family.
COLOURS: tuple[Colour, ...] = (
    Colour("红色", "red", 0.0), Colour("橙色", "orange", 0.08), Colour("黄色", "yellow", 0.16),
    Colour("绿色", "green", 0.33), Colour("蓝色", "blue", 0.6), Colour("紫色", "purple", 0.78),
)

NICK_HEADS: tuple[str, ...] = (
    "小", "阿", "大", "Coco", "Lily", "Amy", "糖糖", "婷婷", "雅", "Mia", "晴天", "月月", "Vivi", "安安", "Kiki",
)
NICK_TAILS: tuple[str, ...] = (
    "穿搭", "的衣橱", "严选", "Closet", "好物分享", "搭配师", "Style", "小铺", "在杭州", "酱", "姐姐", "_live",
)
SKILL_TAGS: tuple[tuple[str, ...], ...] = (
    ("新人主播", "newcomer", "试播"),
    ("日常分享", "真实试穿", "耐心讲解"),
    ("专业讲解", "搭配达人", "优质主播"),
    ("金牌主播", "带货达人", "Top seller", "超级主播"),
)
REACH_TAGS: tuple[tuple[str, ...], ...] = (
    ("小众", "素人"), ("人气上升",), ("十万粉丝", "人气主播"), ("百万粉丝", "头部主播", "KOL"),
)
ROOM_HOOKS: tuple[tuple[str, ...], ...] = (
    ("日常上新", "随便逛逛", "daily live", "慢慢看"),
    ("上新啦", "秋冬穿搭", "new arrivals", "每日特价"),
    ("宠粉福利", "全场包邮", "新品首发", "Big sale"),
    ("爆款直降", "年度大促", "全网最低价", "限量秒杀", "SUPER SALE"),
)
ROOM_TAGS: tuple[tuple[str, ...], ...] = (
    ("日常", "闲聊"), ("穿搭", "上新"), ("源头好货", "品牌特卖", "工厂直销"), ("官方推荐", "爆款专场", "大促"),
)


_TIER_CUTS: dict[int, tuple[float, ...]] = {4: (-0.67, 0.0, 0.67), 2: (0.0,)}


def _tier(rng: np.random.Generator, latent: float, n_tiers: int, jitter: float = 0.35) -> int:
    """Quantile tier of a standard-normal latent (plus a little noise), 0 = lowest. (``bisect_left`` is
    ``np.searchsorted``'s left side without its per-call overhead: the simulator calls this a million times at 10^5
    streams.)"""
    z = latent + jitter * rng.standard_normal()
    return bisect.bisect_left(_TIER_CUTS[n_tiers], z)


def _pick(rng: np.random.Generator, words: tuple[str, ...]) -> str:
    return words[int(rng.integers(len(words)))]


def short_brand(brand: str) -> str:
    """The Chinese half of a bilingual brand ("织梦 ZHIMENG" -> "织梦"), else the whole name."""
    head = brand.split(" ")[0]
    return head if not head.isascii() and " " in brand else brand


def brand_for(rng: np.random.Generator, price_level: float) -> str:
    tier = _tier(rng, price_level, 4)
    pool = PREMIUM_BRANDS if tier == 3 else BUDGET_BRANDS if tier == 0 else MID_BRANDS
    return _pick(rng, pool)


def discount_phrase(rng: np.random.Generator, discount: float) -> str:
    tier = _tier(rng, discount, 4, jitter=0.2)
    phrase = _pick(rng, DISCOUNT_TIERS[tier])
    if tier >= 2 and rng.random() < 0.4:
        phrase = f"{phrase} + {_pick(rng, DISCOUNT_TIERS[0])}"
    return phrase


def item_text(rng: np.random.Generator, appeal: float, price: float, discount: float, category: int,
              colour: int | None = None) -> dict[str, str]:
    """Paper Table 2 text attributes of one commodity; ``colour`` (an index into :data:`COLOURS`, ``cross_modal``
    world) names the item's colour in its title, before the category and in the category's language. It takes no
    random draw, so the rest of the item (text and numbers) is the default world's."""
    cat = CATEGORIES[category]
    brand = brand_for(rng, price)
    style = _pick(rng, PREMIUM_WORDS) if _tier(rng, price, 2) else _pick(rng, BUDGET_WORDS)
    hot = _tier(rng, appeal, 4)
    words = [short_brand(brand), _pick(rng, SEASONS)]
    if hot >= 2:
        words.append(_pick(rng, HOT_WORDS))
    if hot == 3:
        words.append(_pick(rng, HOT_WORDS))
    if hot == 0:
        words.append(_pick(rng, COLD_WORDS))
    chinese = rng.random() < 0.8
    words.append(style)
    if colour is not None:
        words.append(COLOURS[colour].zh if chinese else COLOURS[colour].en)
    words.append(cat.zh if chinese else cat.en)
    return {
        "title": " ".join(words),
        "itemRights": discount_phrase(rng, discount),
        "brandName": brand,
        "shopName": short_brand(brand) + _pick(rng, SHOP_SUFFIXES),
        "categoryName": cat.zh,
    }


def anchor_text(rng: np.random.Generator, reach: float, skill: float) -> dict[str, str]:
    """Paper Table 1 text attributes of one anchor."""
    fields, weights, categories = zip(*BROADCASTER_FIELDS, strict=True)
    field = int(rng.choice(len(fields), p=np.asarray(weights) / sum(weights)))
    tags = [_pick(rng, SKILL_TAGS[_tier(rng, skill, 4)]), _pick(rng, REACH_TAGS[_tier(rng, reach, 4)])]
    if rng.random() < 0.5:
        tags.append(_pick(rng, ("身高165", "微胖友好", "杭州", "广州", "原创", "福利多", "happy shopping")))
    return {
        "broadCasterField": fields[field],
        "categoryName": _pick(rng, categories[field]),
        "nick": _pick(rng, NICK_HEADS) + _pick(rng, NICK_TAILS),
        "tags": ",".join(tags),
    }


def anchor_profile(rng: np.random.Generator, field: int, audience: float, tags: str) -> dict[str, str]:
    """The anchor text that the ``fit`` world sets from its latents, replacing :func:`anchor_text`'s: the field
    (an index into :data:`BROADCASTER_FIELDS`) and a category it goes with, and ``tags`` with an audience tag of the
    audience's price level appended. ``rng`` is a stream of its own, so the anchor's other values stay the default
    world's."""
    name, _, categories = BROADCASTER_FIELDS[field]
    return {"broadCasterField": name, "categoryName": _pick(rng, categories),
            "tags": f"{tags},{_pick(rng, AUDIENCE_TAGS[_tier(rng, audience, 4)])}"}


def room_text(rng: np.random.Generator, attractiveness: float, main_category: int) -> dict[str, str]:
    """Paper Table 3 text attributes of one streaming room; ``main_category`` is its first item's category."""
    tier = _tier(rng, attractiveness, 4)
    cat = CATEGORIES[main_category]
    hooks = [_pick(rng, ROOM_HOOKS[tier])]
    if tier >= 2:
        hooks.append(_pick(rng, ROOM_HOOKS[tier]))
    title = f"{_pick(rng, SEASONS)}{cat.zh}专场 | " + " ".join(dict.fromkeys(hooks))
    return {"title": title, "tag": ",".join(dict.fromkeys([_pick(rng, ROOM_TAGS[tier]), cat.zh]))}
