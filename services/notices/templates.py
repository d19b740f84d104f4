"""Templates for send_direct: each names the params it needs, so a call is checked before it sends."""

import string

from shared.errors import ValidationError

TEMPLATES = {
    "consultation_reminder": (
        "法律咨询提醒 Legal consultation reminder",
        "您预约的法律咨询将于 {starts_at} 在{station}进行。Your legal consultation at {station} starts at {starts_at}.",
    ),
    "volunteer_offer": (
        "志愿服务邀请 Volunteer request",
        "附近有一项{kind}求助，请在 {respond_by} 前回复。A {kind} request near you needs help; reply by {respond_by}.",
    ),
    "quarantine_instructions": (
        "居家隔离须知 Home quarantine instructions",
        "请居家隔离至 {until}，每日报告体温；生活物资由志愿者送达。Stay home until {until}, report your "
        "temperature daily; volunteers will bring groceries.",
    ),
    "check_in": (
        "网格员回访 Grid worker check-in",
        "网格员将于{when}上门回访。Your grid worker will visit {when}.",
    ),
    "general": ("{title}", "{text}"),
}


def fields_of(template):
    title, body = TEMPLATES[template]
    return {name for text in (title, body) for _, name, _, _ in string.Formatter().parse(text) if name}


def render(template, params):
    needed = fields_of(template)
    missing = sorted(needed - set(params))
    unknown = sorted(set(params) - needed)
    errors = {}
    if missing:
        errors["params"] = [f"Missing: {', '.join(missing)}."]
    if unknown:
        errors.setdefault("params", []).append(f"Not used by {template}: {', '.join(unknown)}.")
    if errors:
        raise ValidationError(errors)
    title, body = TEMPLATES[template]
    return title.format(**params), body.format(**params)
