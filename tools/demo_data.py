"""The demo district `make run` seeds: 滨城区 (Bincheng District, Binzhou, Shandong), generated
deterministically from a fixed random seed.

Pure data, no I/O: ``build_district()`` returns the whole district — streets (real 街道 names),
communities, large/medium/small grids with their staff and Party organisations, households with
synthetic residents, screening visits, incidents, legal stations and lawyers with weekly plans,
volunteers, duty posts with shifts, pledges and help requests — and the same seed always gives
the same district. The seeders (``services/<name>/seed.py``) send it through each service's RPC.

Street names are the district's real ones; everything below them (community and compound names,
people, ID numbers, phone numbers, law firms) is made up. ID numbers are valid in form (region
code, birth date, check digit) but synthetic; phone numbers are well-formed mobile numbers drawn
at random.

Records point at each other by stable keys, not database ids: units by ``code`` (unique in the
grid), residents by ``phone`` (unique here), households and stations by ``key``. The seeders map
keys to ids by reading the grid back.
"""

import datetime as dt
import random
from dataclasses import dataclass, field

from services.grid.idnumbers import make_id_number
from services.legal.vocabulary import SPECIALTIES

DEFAULT_SEED = 3716_02
DEFAULT_RESIDENTS = 3000
DEFAULT_STREETS = 6

DISTRICT_CODE = "371602"  # the district's administrative division code
DISTRICT_NAME = "滨城区"
REGION_CODE = "371602"
# Residents born elsewhere carry another region's code: Binzhou's other counties, and Jinan.
OTHER_REGION_CODES = ("371603", "371621", "371622", "371623", "371625", "371681", "370102", "370105")
# Ages are counted at this date, so the district does not change from one year to the next.
REFERENCE_DATE = dt.date(2025, 1, 1)

# The district's real streets (街道) and towns (镇): the first ``streets`` of them are seeded.
STREETS = (
    "市中街道",
    "市西街道",
    "市东街道",
    "北镇街道",
    "彭李街道",
    "滨北街道",
    "小营街道",
    "梁才街道",
    "杜店街道",
    "沙河街道",
    "里则街道",
    "三河湖镇",
)

COMMUNITY_WORDS = (
    "黄河",
    "渤海",
    "新立河",
    "秦皇河",
    "中海",
    "御河",
    "滨河",
    "北海",
    "丰泽",
    "锦绣",
    "明珠",
    "怡园",
    "东城",
    "西城",
    "南苑",
    "北苑",
    "新华",
    "建设",
    "胜利",
    "和平",
    "幸福",
    "阳光",
    "彩虹",
    "翠园",
    "康居",
    "安居",
    "金阳",
    "玉龙湖",
    "蒲湖",
    "凤凰",
    "梧桐",
    "富源",
    "兴业",
    "民安",
    "福苑",
    "长江",
    "黄山",
    "渤海七路",
    "黄河五路",
    "新立",
    "鑫城",
    "文汇",
)
COMPOUND_WORDS = (
    "锦绣",
    "御景",
    "金色",
    "康乐",
    "翰林",
    "世纪",
    "怡景",
    "和园",
    "新城",
    "华府",
    "书香",
    "海棠",
    "紫薇",
    "丁香",
    "玉兰",
    "银河",
    "滨湖",
    "绿洲",
    "盛世",
    "颐和",
    "兰亭",
    "雅居",
    "香榭",
    "美景",
    "清华",
    "东方",
    "碧水",
    "溪园",
    "水岸",
    "学府",
    "润泽",
    "泰和",
    "百合",
    "春晖",
    "龙城",
    "瑞景",
)
COMPOUND_SUFFIXES = ("花园", "小区", "家园", "苑", "新村", "华庭", "名居", "公寓")
CN_ORDINALS = "一二三四五六七八九十"

# Common surnames, most frequent first (Shandong leans to 王, 张, 李, 刘).
SURNAMES = (
    "王",
    "张",
    "李",
    "刘",
    "陈",
    "杨",
    "赵",
    "孙",
    "徐",
    "马",
    "高",
    "朱",
    "胡",
    "郭",
    "何",
    "宋",
    "于",
    "田",
    "董",
    "韩",
    "曹",
    "许",
    "吕",
    "崔",
    "魏",
    "邢",
    "房",
    "付",
    "孟",
    "薛",
    "商",
    "路",
)
SURNAME_WEIGHTS = tuple(max(1, 40 - 2 * i) for i in range(len(SURNAMES)))
GIVEN_MALE = (
    "伟",
    "强",
    "磊",
    "军",
    "勇",
    "杰",
    "涛",
    "斌",
    "超",
    "明",
    "刚",
    "平",
    "辉",
    "鹏",
    "华",
    "飞",
    "鑫",
    "波",
    "宁",
    "建国",
    "建华",
    "志强",
    "海涛",
    "文博",
    "子轩",
    "浩然",
    "宇航",
    "俊杰",
    "立新",
    "振华",
    "国庆",
    "德胜",
    "承泽",
    "嘉豪",
)
GIVEN_FEMALE = (
    "芳",
    "娜",
    "敏",
    "静",
    "丽",
    "艳",
    "娟",
    "霞",
    "秀英",
    "桂兰",
    "玉兰",
    "丽华",
    "淑珍",
    "婷",
    "雪",
    "琳",
    "颖",
    "倩",
    "欣怡",
    "梓涵",
    "雨桐",
    "思琪",
    "晓燕",
    "红梅",
    "春花",
    "秀云",
    "佳怡",
    "一诺",
    "子萱",
    "海燕",
)
MOBILE_PREFIXES = (
    "130",
    "131",
    "132",
    "133",
    "134",
    "135",
    "136",
    "137",
    "138",
    "139",
    "150",
    "151",
    "152",
    "153",
    "155",
    "156",
    "157",
    "158",
    "159",
    "177",
    "180",
    "181",
    "182",
    "183",
    "185",
    "186",
    "187",
    "188",
    "189",
    "199",
)

LAW_FIRMS = (
    "滨州明理律师事务所",
    "渤海正衡律师事务所",
    "黄河公信律师事务所",
    "滨城致远律师事务所",
    "鲁北同心律师事务所",
    "滨州至诚律师事务所",
    "北海和信律师事务所",
    "滨州民本律师事务所",
)
# How common each of legal's specialties is among the district's lawyers, in SPECIALTIES' order.
SPECIALTY_WEIGHTS = (6, 4, 4, 3, 6, 3, 2, 1)

SKILL_SETS = (  # (skills, weight)
    (("delivery",), 8),
    (("delivery", "driving"), 6),
    (("elderly_care",), 6),
    (("elderly_care", "psychological_support"), 4),
    (("medical",), 3),
    (("medical", "elderly_care"), 3),
    (("delivery", "elderly_care"), 5),
    (("psychological_support",), 2),
    (("legal_aid",), 1),
    (("it_support",), 2),
    (("translation",), 1),
    (("driving",), 2),
    (("delivery", "it_support"), 2),
)
AVAILABILITY: dict[str, list[dict[str, object]]] = {  # weekly windows in Asia/Shanghai
    "evenings_weekends": [{"weekday": d, "start": "18:00", "end": "21:30"} for d in range(5)]
    + [{"weekday": d, "start": "08:00", "end": "20:00"} for d in (5, 6)],
    "daytime": [{"weekday": d, "start": "08:00", "end": "18:00"} for d in range(7)],
    "weekends": [{"weekday": d, "start": "08:00", "end": "20:00"} for d in (5, 6)],
    "flexible": [{"weekday": d, "start": "07:00", "end": "22:00"} for d in range(7)],
}
AVAILABILITY_WEIGHTS = {"evenings_weekends": 4, "daytime": 3, "weekends": 1, "flexible": 3}

# Household shapes: (kind, weight). Sizes are 1..5.
HOUSEHOLD_KINDS = (
    ("single_elderly", 9),
    ("single_adult", 9),
    ("elderly_couple", 14),
    ("couple", 13),
    ("nuclear", 33),
    ("three_generations", 14),
    ("single_parent", 8),
)

VISIT_OUTCOMES = (("seen_ok", 76), ("seen_concern", 9), ("absent", 12), ("refused", 3))
CONCERN_NOTES = (
    "老人腿脚不便，需定期探访",
    "独居老人，冰箱存粮不足",
    "家中燃气灶老化，已提醒更换",
    "慢性病患者，药品快用完",
    "楼道堆放杂物，存在消防隐患",
)


@dataclass(frozen=True)
class Staff:
    user_id: str
    role: str
    name: str


@dataclass
class Resident:
    name: str
    sex: str  # "M" / "F"
    birth_date: dt.date
    id_number: str
    phone: str
    tags: list = field(default_factory=list)

    def age(self, on=REFERENCE_DATE):
        return on.year - self.birth_date.year - ((on.month, on.day) < (self.birth_date.month, self.birth_date.day))


@dataclass
class Household:
    key: str
    unit_code: str
    kind: str
    address: dict
    residents: list = field(default_factory=list)


@dataclass
class Unit:
    code: str
    level: str
    name: str
    party_org: str | None = None
    staff: list = field(default_factory=list)
    children: list = field(default_factory=list)
    households: list = field(default_factory=list)  # grid_small only

    def walk(self):
        yield self
        for child in self.children:
            yield from child.walk()


@dataclass
class Visit:
    household_key: str
    outcome: str
    note: str | None


@dataclass
class Incident:
    unit_code: str
    category: str
    description: str
    resolution: str | None = None


@dataclass
class Station:
    key: str
    unit_code: str
    name: str
    address: str


@dataclass
class Lawyer:
    name: str
    firm: str
    license_no: str
    specialties: list
    station_keys: list
    schedules: dict  # station key -> weekly windows
    resident_phone: str | None = None


@dataclass
class Volunteer:
    name: str
    phone: str
    home_unit_code: str
    skills: list
    availability: list
    max_active_tasks: int
    party_member: bool
    resident_phone: str | None = None  # linked to this resident of the grid


@dataclass
class Shift:
    day_offset: int  # days after the seeding day (local time)
    start: str  # "HH:MM", Asia/Shanghai
    end: str
    needed: int
    volunteer_phones: list = field(default_factory=list)  # who signs up


@dataclass
class Post:
    unit_code: str
    name: str
    location: str
    shifts: list = field(default_factory=list)


@dataclass
class Pledge:
    volunteer_phone: str
    text: str
    due_in_days: int
    fulfilled_note: str | None = None


@dataclass
class HelpRequest:
    resident_phone: str
    unit_code: str
    kind: str
    details: str
    urgency: str
    needed_in_hours: int
    accept: bool  # the offered volunteer accepts
    complete: bool  # ...and has done it


@dataclass
class District:
    seed: int
    root: Unit
    visits: list
    incidents: list
    stations: list
    lawyers: list
    volunteers: list
    posts: list
    pledges: list
    requests: list

    @property
    def code(self):
        return self.root.code

    def units(self, level=None):
        return [u for u in self.root.walk() if level is None or u.level == level]

    def households(self):
        return [h for small in self.units("grid_small") for h in small.households]

    def residents(self):
        return [r for h in self.households() for r in h.residents]

    def counts(self):
        levels: dict[str, int] = {}
        for unit in self.units():
            levels[unit.level] = levels.get(unit.level, 0) + 1
        tags: dict[str, int] = {}
        for resident in self.residents():
            for tag in resident.tags:
                tags[tag] = tags.get(tag, 0) + 1
        return {
            "units": levels,
            "households": len(self.households()),
            "residents": len(self.residents()),
            "tags": tags,
            "staff": sum(len(u.staff) for u in self.units()),
            "visits": len(self.visits),
            "incidents": len(self.incidents),
            "stations": len(self.stations),
            "lawyers": len(self.lawyers),
            "volunteers": len(self.volunteers),
            "linked_volunteers": sum(1 for v in self.volunteers if v.resident_phone),
            "posts": len(self.posts),
            "shifts": sum(len(p.shifts) for p in self.posts),
            "pledges": len(self.pledges),
            "requests": len(self.requests),
        }


def _weighted(rng, pairs):
    values, weights = zip(*pairs, strict=True)
    return rng.choices(values, weights=weights)[0]


class _People:
    """Unique synthetic names, ID numbers and phone numbers."""

    def __init__(self, rng):
        self.rng = rng
        self.phones = set()
        self.ids = set()

    def surname(self):
        return self.rng.choices(SURNAMES, weights=SURNAME_WEIGHTS)[0]

    def name(self, sex, surname=None):
        given = self.rng.choice(GIVEN_MALE if sex == "M" else GIVEN_FEMALE)
        return (surname or self.surname()) + given

    def phone(self):
        while True:
            phone = self.rng.choice(MOBILE_PREFIXES) + f"{self.rng.randrange(10**8):08d}"
            if phone not in self.phones:
                self.phones.add(phone)
                return phone

    def birth_date(self, age):
        # born ``age`` years before the reference date, on a random day of that year of life
        latest = REFERENCE_DATE.replace(year=REFERENCE_DATE.year - age) - dt.timedelta(days=1)
        return latest - dt.timedelta(days=self.rng.randrange(365))

    def id_number(self, sex, birth):
        region = REGION_CODE if self.rng.random() < 0.88 else self.rng.choice(OTHER_REGION_CODES)
        while True:
            sequence = self.rng.randrange(500) * 2 + (1 if sex == "M" else 0)  # odd for men, even for women
            number = make_id_number(region, birth, sequence)
            if number not in self.ids:
                self.ids.add(number)
                return number

    def resident(self, sex, age, surname=None):
        birth = self.birth_date(age)
        return Resident(
            name=self.name(sex, surname),
            sex=sex,
            birth_date=birth,
            id_number=self.id_number(sex, birth),
            phone=self.phone(),
        )


def _household_members(rng, people, kind):
    """(members, kind): 1..5 residents of a plausible shape."""
    family = people.surname()
    other = "F" if rng.random() < 0.5 else "M"
    if kind == "single_elderly":
        return [people.resident(rng.choice("MF"), rng.randint(66, 93))]
    if kind == "single_adult":
        return [people.resident(rng.choice("MF"), rng.randint(19, 62))]
    if kind == "elderly_couple":
        age = rng.randint(60, 88)
        return [people.resident("M", age, family), people.resident("F", max(58, age - rng.randint(0, 5)))]
    if kind == "couple":
        age = rng.randint(24, 62)
        return [people.resident("M", age, family), people.resident("F", max(22, age - rng.randint(0, 4)))]
    parent_age = rng.randint(27, 50)
    children = [
        people.resident(rng.choice("MF"), rng.randint(0, max(0, min(20, parent_age - 22))), family)
        for _ in range(rng.choice((1, 1, 2)))
    ]
    if kind == "nuclear":
        return [
            people.resident("M", parent_age, family),
            people.resident("F", max(22, parent_age - rng.randint(0, 4))),
        ] + children
    if kind == "single_parent":
        return [people.resident(other, parent_age, family if other == "M" else None)] + children
    # three generations: grandparent(s), the couple, one child
    grand_age = parent_age + rng.randint(24, 32)
    grandparents = [people.resident("M", grand_age, family)] if rng.random() < 0.5 else []
    grandparents.append(people.resident("F", grand_age - rng.randint(0, 4)))
    return (
        grandparents
        + [people.resident("M", parent_age, family), people.resident("F", max(22, parent_age - rng.randint(0, 4)))]
        + children[:1]
    )


def _tag(rng, household):
    members = household.residents
    for resident in members:
        age = resident.age()
        if household.kind == "single_elderly":
            resident.tags.append("elderly_alone")
        if rng.random() < (0.28 if age >= 55 else 0.03 if age >= 30 else 0.0):
            resident.tags.append("chronic_illness")
        if age >= 20 and rng.random() < (0.14 if age >= 45 else 0.07):
            resident.tags.append("party_member")
        if rng.random() < 0.02:
            resident.tags.append("disabled")
        if resident.sex == "F" and 23 <= age <= 38 and household.kind in ("couple", "nuclear") and rng.random() < 0.05:
            resident.tags.append("pregnant")
        if (("elderly_alone" in resident.tags and age >= 80) or "disabled" in resident.tags) and rng.random() < 0.6:
            resident.tags.append("needs_assistance")
    if rng.random() < 0.04:
        members[0].tags.append("low_income")


def _grid_tree(rng, people, streets, residents_target):
    """The unit tree with staff and households, ``residents_target`` residents in all."""
    community_words = iter(rng.sample(COMMUNITY_WORDS, len(COMMUNITY_WORDS)))
    compounds = set()
    compound_of = {}

    def compound_name():
        while True:
            name = rng.choice(COMPOUND_WORDS) + rng.choice(COMPOUND_SUFFIXES)
            if name not in compounds:
                compounds.add(name)
                return name

    def staff(code, role, suffix=""):
        return Staff(user_id=f"{role}-{code}{suffix}", role=role, name=people.name(rng.choice("MF")))

    root = Unit(
        code=DISTRICT_CODE, level="district", name=DISTRICT_NAME, party_org=f"中共{DISTRICT_NAME}委社区治理综合党委"
    )
    root.staff.append(staff(DISTRICT_CODE, "officer"))
    smalls = []
    for s, street_name in enumerate(STREETS[:streets], start=1):
        code = f"{DISTRICT_CODE}-{s:02d}"
        street = Unit(
            code=code,
            level="street",
            name=street_name,
            party_org=f"{street_name}综合党委",
            staff=[staff(code, "officer"), staff(code, "party_secretary")],
        )
        root.children.append(street)
        for c in range(1, rng.randint(3, 4) + 1):
            word = next(community_words)
            community_name = f"{word}社区"
            ccode = f"{code}-{c:02d}"
            community = Unit(
                code=ccode,
                level="community",
                name=community_name,
                party_org=f"{community_name}党总支",
                staff=[staff(ccode, "party_secretary"), staff(ccode, "officer")],
            )
            street.children.append(community)
            for g in range(1, rng.randint(1, 2) + 1):
                lcode = f"{ccode}-{g}"
                large = Unit(
                    code=lcode,
                    level="grid_large",
                    name=f"第{CN_ORDINALS[g - 1]}大网格",
                    party_org=f"{community_name}第{CN_ORDINALS[g - 1]}网格党支部",
                    staff=[staff(lcode, "grid_leader")],
                )
                community.children.append(large)
                for m in range(1, 3):
                    mcode = f"{lcode}-{m}"
                    compound = compound_name()
                    medium = Unit(
                        code=mcode,
                        level="grid_medium",
                        name=f"第{CN_ORDINALS[m - 1]}中网格（{compound}）",
                        party_org=f"{compound}党支部",
                        staff=[staff(mcode, "grid_leader")],
                    )
                    large.children.append(medium)
                    for n in range(1, rng.randint(2, 3) + 1):
                        scode = f"{mcode}-{n}"
                        small = Unit(
                            code=scode,
                            level="grid_small",
                            name=f"{compound}第{n}网格",
                            party_org=f"{compound}第{n}网格党小组",
                            staff=[staff(scode, "grid_worker")],
                        )
                        compound_of[scode] = compound
                        medium.children.append(small)
                        smalls.append(small)
    # Households: round-robin over the small grids (each with its own density) until the target.
    density = {small.code: rng.uniform(0.6, 1.4) for small in smalls}
    rooms: dict[str, set[tuple[str, ...]]] = {small.code: set() for small in smalls}
    made = 0
    serial = 0
    while made < residents_target:
        for small in smalls:
            if made >= residents_target:
                break
            if rng.random() > density[small.code] / 1.4:
                continue
            kind = _weighted(rng, HOUSEHOLD_KINDS)
            members = _household_members(rng, people, kind)
            while True:
                n = int(small.code.rsplit("-", 1)[1])
                building = str((n - 1) * 6 + rng.randint(1, 6))
                floor = rng.randint(1, 18)
                address = {
                    "compound": compound_of[small.code],
                    "building": f"{building}号楼",
                    "entrance": f"{rng.randint(1, 3)}单元",
                    "room": f"{floor}0{rng.randint(1, 2)}",
                }
                where = tuple(address.values())
                if where not in rooms[small.code]:
                    rooms[small.code].add(where)
                    break
            serial += 1
            household = Household(
                key=f"H{serial:05d}", unit_code=small.code, kind=kind, address=address, residents=members
            )
            _tag(rng, household)
            small.households.append(household)
            made += len(members)
    return root


def _visits(rng, root):
    """A door-to-door screening reaching about 40% of households, most in the first two streets."""
    visits = []
    for s, street in enumerate(root.children):
        share = 0.7 if s < 2 else 0.2
        for small in (u for u in street.walk() if u.level == "grid_small"):
            for household in small.households:
                if rng.random() < share:
                    outcome = _weighted(rng, VISIT_OUTCOMES)
                    note = rng.choice(CONCERN_NOTES) if outcome == "seen_concern" else None
                    visits.append(Visit(household.key, outcome, note))
    return visits


def _incidents(rng, smalls):
    picks = rng.sample(smalls, 5)
    return [
        Incident(picks[0].code, "infrastructure", "3号楼2单元楼道灯损坏，老人夜间上下楼不便"),
        Incident(picks[1].code, "safety_hazard", "有居民在楼道内给电动自行车充电，存在火灾隐患"),
        Incident(
            picks[2].code, "infrastructure", "小区东门路面塌陷，雨后积水", resolution="已联系物业修补，积水已清理"
        ),
        Incident(picks[3].code, "other", "小区内共享单车乱停放，占用消防通道"),
        Incident(picks[4].code, "safety_hazard", "小区燃气管道有异味，已通知燃气公司上门检查"),
    ]


def _legal(rng, people, root, residents):
    stations = []
    for street in root.children:
        stations.append(
            Station(
                f"S-{street.code}", street.code, f"{street.name}公共法律服务工作站", f"{street.name}便民服务中心二楼"
            )
        )
        for community in street.children:
            if rng.random() < 0.5:
                stations.append(
                    Station(
                        f"S-{community.code}",
                        community.code,
                        f"{community.name}法律服务室",
                        f"{community.name}党群服务中心一楼",
                    )
                )
    by_street: dict[str, list[Station]] = {}
    for station in stations:
        by_street.setdefault(station.unit_code[: len(DISTRICT_CODE) + 3], []).append(station)
    lawyers = []
    licences = set()
    linked = rng.sample([r for r in residents if 30 <= r.age() <= 60], 4)
    for n in range(36):
        street_stations = by_street[root.children[n % len(root.children)].code]
        chosen = [street_stations[0]]
        if len(street_stations) > 1 and rng.random() < 0.6:
            chosen.append(rng.choice(street_stations[1:]))
        days = rng.sample(range(5), len(chosen) * 2)
        schedules = {}
        for i, station in enumerate(chosen):
            schedules[station.key] = [
                {"weekday": days[2 * i], "start": "09:00", "end": "11:30"},
                {"weekday": days[2 * i + 1], "start": "14:00", "end": "17:00"},
            ]
        specialties: set[str] = set()
        while len(specialties) < rng.randint(1, 3):
            specialties.add(rng.choices(SPECIALTIES, weights=SPECIALTY_WEIGHTS)[0])
        resident = linked[n] if n < len(linked) else None
        name = resident.name if resident else people.name(rng.choice("MF"))
        while True:
            licence = f"13716{rng.randint(2005, 2022)}1{rng.randrange(10**6):06d}"
            if licence not in licences:
                licences.add(licence)
                break
        lawyers.append(
            Lawyer(
                name=name,
                firm=rng.choice(LAW_FIRMS),
                license_no=licence,
                specialties=sorted(specialties),
                station_keys=[s.key for s in chosen],
                schedules=schedules,
                resident_phone=resident.phone if resident else None,
            )
        )
    return stations, lawyers


def _volunteers(rng, people, root, target):
    """``target`` volunteers: at least one per small grid, three in four of them residents."""
    volunteers = []
    taken = set()

    def of_resident(small, resident):
        taken.add(resident.phone)
        skills = list(_weighted(rng, SKILL_SETS))
        age = resident.age()
        pattern = _weighted(rng, AVAILABILITY_WEIGHTS.items()) if age < 60 else "daytime"
        return Volunteer(
            name=resident.name,
            phone=resident.phone,
            home_unit_code=small.code,
            skills=skills,
            availability=AVAILABILITY[pattern],
            max_active_tasks=rng.randint(2, 4),
            party_member="party_member" in resident.tags,
            resident_phone=resident.phone,
        )

    def candidates(small):
        return [
            r
            for h in small.households
            for r in h.residents
            if 18 <= r.age() <= 70
            and r.phone not in taken
            and not {"elderly_alone", "disabled", "pregnant"} & set(r.tags)
        ]

    smalls = [u for u in root.walk() if u.level == "grid_small"]
    for small in smalls:
        pool = candidates(small)
        if pool:
            volunteers.append(of_resident(small, rng.choice(pool)))
    available = sum(len(candidates(small)) for small in smalls)
    linked_target = min(int(target * 0.75), len(volunteers) + available)
    while len(volunteers) < linked_target:
        small = rng.choice(smalls)
        pool = candidates(small)
        if pool:
            volunteers.append(of_resident(small, rng.choice(pool)))
    while len(volunteers) < target:  # from outside the register: students, company volunteers
        sex = rng.choice("MF")
        volunteers.append(
            Volunteer(
                name=people.name(sex),
                phone=people.phone(),
                home_unit_code=rng.choice(smalls).code,
                skills=list(_weighted(rng, SKILL_SETS)),
                availability=AVAILABILITY[_weighted(rng, AVAILABILITY_WEIGHTS.items())],
                max_active_tasks=rng.randint(2, 4),
                party_member=rng.random() < 0.2,
            )
        )
    return volunteers


def _duty(rng, root, volunteers):
    posts = []
    by_community: dict[str, list[Volunteer]] = {}
    for volunteer in volunteers:
        by_community.setdefault(volunteer.home_unit_code.rsplit("-", 3)[0], []).append(volunteer)
    for community in (u for u in root.walk() if u.level == "community"):
        post = Post(community.code, f"{community.name}党员先锋岗", f"{community.name}党群服务中心门口")
        pool = sorted(by_community.get(community.code, []), key=lambda v: (not v.party_member, v.phone))
        rng.shuffle(pool)
        for day in (1, 2):
            for start, end in (("08:00", "12:00"), ("14:00", "18:00")):
                needed = rng.randint(2, 4)
                signed = [pool.pop().phone for _ in range(min(len(pool), rng.randint(needed - 1, needed)))]
                post.shifts.append(Shift(day, start, end, needed, signed))
        posts.append(post)
    return posts


def _pledges(rng, volunteers):
    texts = (
        "每周为独居老人代购一次生活用品",
        "每月组织一次楼道卫生清理",
        "为社区老人义务理发",
        "每周两次陪同行动不便老人就医",
        "义务为居民讲解反诈知识",
        "帮助老人学会使用智能手机",
    )
    pledges = []
    party = [v for v in volunteers if v.party_member]
    for volunteer in rng.sample(party, min(30, len(party))):
        fulfilled = rng.choice(("已完成，居民反映良好", None, None))
        pledges.append(Pledge(volunteer.phone, rng.choice(texts), rng.randint(7, 60), fulfilled))
    return pledges


def _requests(rng, root):
    needs = {
        "medicine": ("帮忙到社区卫生服务站取降压药", "代购常用药：降糖药和眼药水"),
        "escort": ("陪同到市人民医院复查", "陪同去银行办理养老金业务"),
        "groceries": ("代购一周的米面油和蔬菜", "帮忙买菜和鸡蛋"),
        "check_in": ("独居老人电话没人接，请上门看看", "每周上门探望一次，聊聊天"),
    }
    vulnerable = [
        (h.unit_code, r)
        for small in (u for u in root.walk() if u.level == "grid_small")
        for h in small.households
        for r in h.residents
        if {"elderly_alone", "needs_assistance", "disabled"} & set(r.tags)
    ]
    requests = []
    for unit_code, resident in rng.sample(vulnerable, min(24, len(vulnerable))):
        kind = rng.choice(sorted(needs))
        accept = rng.random() < 0.6
        requests.append(
            HelpRequest(
                resident_phone=resident.phone,
                unit_code=unit_code,
                kind=kind,
                details=rng.choice(needs[kind]),
                urgency=rng.choice(("low", "normal", "normal", "high")),
                needed_in_hours=rng.randint(4, 72),
                accept=accept,
                complete=accept and rng.random() < 0.5,
            )
        )
    return requests


def build_district(seed=DEFAULT_SEED, residents=DEFAULT_RESIDENTS, streets=DEFAULT_STREETS, volunteers=320):
    """The whole demo district; the same arguments always give the same district."""
    if not 4 <= streets <= len(STREETS):
        raise ValueError(f"streets must be 4..{len(STREETS)}")
    rng = random.Random(seed)
    people = _People(rng)
    root = _grid_tree(rng, people, streets, residents)
    smalls = [u for u in root.walk() if u.level == "grid_small"]
    everyone = [r for small in smalls for h in small.households for r in h.residents]
    stations, lawyers = _legal(rng, people, root, everyone)
    crew = _volunteers(rng, people, root, volunteers)
    return District(
        seed=seed,
        root=root,
        visits=_visits(rng, root),
        incidents=_incidents(rng, smalls),
        stations=stations,
        lawyers=lawyers,
        volunteers=crew,
        posts=_duty(rng, root, crew),
        pledges=_pledges(rng, crew),
        requests=_requests(rng, root),
    )


if __name__ == "__main__":
    import json
    import time

    started = time.perf_counter()
    district = build_district()
    print(json.dumps(district.counts(), ensure_ascii=False, indent=2))
    print(f"built in {time.perf_counter() - started:.2f}s")
