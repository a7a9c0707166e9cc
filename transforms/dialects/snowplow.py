"""Snowplow -> canonical events. Three input forms, one set of rules:

- the **enriched TSV** written by Snowplow Enrich (131 tab-separated fields, in ``ENRICHED_FIELDS`` order);
- its **JSON form** (what Snowplow's analytics SDKs make of that TSV: typed fields, self-describing contexts
  as ``contexts_<vendor>_<name>_<model>`` lists, the event's own data as ``unstruct_event_<vendor>_<name>_<model>``);
- **raw tracker protocol** payloads, as trackers send them: a ``payload_data`` POST body (a batch), one
  payload object, or a GET query string (``e=pv&eid=...``). Their parameters are first renamed to the
  enriched fields (``eid`` -> ``event_id``, ``dtm`` -> ``dvce_created_tstamp``, ``ue_px`` -> base64 JSON of
  ``unstruct_event`` ...; ``TRACKER_PARAMS``) and then mapped like an enriched event.

Columns, from enriched fields:

- ``event_id`` <- ``event_id`` (``eid``); without one, a UUID derived from the record's content.
- ``type`` / ``event``: ``page_view`` (``pv``) -> page / ``Page Viewed``; ``page_ping`` (``pp``) -> track /
  ``Page Ping``; ``struct`` (``se``) -> track / ``se_action``; ``transaction`` (``tr``) -> track /
  ``Transaction``; ``transaction_item`` (``ti``) -> track / ``Transaction Item``; ``unstruct`` (``ue``) ->
  track / the event schema's name (``event_name``), except ``screen_view`` -> screen / ``Screen Viewed``.
- ``anonymous_id`` <- ``domain_userid`` (``duid``), else ``network_userid`` (``nuid``/``tnuid``);
  ``user_id`` <- ``user_id`` (``uid``). Neither is required (server-side trackers often send none).
- ``timestamp`` <- ``true_tstamp``, else ``derived_tstamp``, else ``dvce_created_tstamp``, else
  ``collector_tstamp``, else ``received_at``; ``received_at`` <- ``collector_tstamp``, else the processing
  time; ``sent_at`` <- ``dvce_sent_tstamp``.
- ``properties``: page events ``url``/``title``/``referrer``/``path`` (+ the ping's offsets); struct events
  ``category``/``action``/``label``/``property``/``value`` (a number when it is one); self-describing
  events their ``data``; transactions the ``tr_``/``ti_`` fields without the prefix.
- ``context``: ``app_id``, ``platform``, ``ip``, ``userAgent``, ``locale``, ``page``; ``tenant_id`` from the
  first attached entity whose data has a ``tenant_id``; ``consent`` from an entity named ``consent``; and
  ``snowplow``: every non-empty original field (contexts as ``{schema, data}`` entities; a self-describing
  event's schema as ``event_schema``), so nothing of the record is lost.
- ``traits``: null.
"""
from __future__ import annotations

import base64
import binascii
from urllib.parse import parse_qsl

import orjson

from transforms.dialects import common
from transforms.dialects.segment import Rejected

ENRICHED_FIELDS = (
    "app_id platform etl_tstamp collector_tstamp dvce_created_tstamp event event_id txn_id name_tracker "
    "v_tracker v_collector v_etl user_id user_ipaddress user_fingerprint domain_userid domain_sessionidx "
    "network_userid geo_country geo_region geo_city geo_zipcode geo_latitude geo_longitude geo_region_name "
    "ip_isp ip_organization ip_domain ip_netspeed page_url page_title page_referrer page_urlscheme page_urlhost "
    "page_urlport page_urlpath page_urlquery page_urlfragment refr_urlscheme refr_urlhost refr_urlport "
    "refr_urlpath refr_urlquery refr_urlfragment refr_medium refr_source refr_term mkt_medium mkt_source "
    "mkt_term mkt_content mkt_campaign contexts se_category se_action se_label se_property se_value "
    "unstruct_event tr_orderid tr_affiliation tr_total tr_tax tr_shipping tr_city tr_state tr_country "
    "ti_orderid ti_sku ti_name ti_category ti_price ti_quantity pp_xoffset_min pp_xoffset_max pp_yoffset_min "
    "pp_yoffset_max useragent br_name br_family br_version br_type br_renderengine br_lang br_features_pdf "
    "br_features_flash br_features_java br_features_director br_features_quicktime br_features_realplayer "
    "br_features_windowsmedia br_features_gears br_features_silverlight br_cookies br_colordepth br_viewwidth "
    "br_viewheight os_name os_family os_manufacturer os_timezone dvce_type dvce_ismobile dvce_screenwidth "
    "dvce_screenheight doc_charset doc_width doc_height tr_currency tr_total_base tr_tax_base tr_shipping_base "
    "ti_currency ti_price_base base_currency geo_timezone mkt_clickid mkt_network etl_tags dvce_sent_tstamp "
    "refr_domain_userid refr_device_tstamp derived_contexts domain_sessionid derived_tstamp event_vendor "
    "event_name event_format event_version event_fingerprint true_tstamp"
).split()
assert len(ENRICHED_FIELDS) == 131

_TSTAMP = frozenset({"etl_tstamp", "collector_tstamp", "dvce_created_tstamp", "dvce_sent_tstamp",
                     "refr_device_tstamp", "derived_tstamp", "true_tstamp"})
_INT = frozenset({"txn_id", "domain_sessionidx", "page_urlport", "refr_urlport", "ti_quantity", "pp_xoffset_min",
                  "pp_xoffset_max", "pp_yoffset_min", "pp_yoffset_max", "br_viewwidth", "br_viewheight",
                  "dvce_screenwidth", "dvce_screenheight", "doc_width", "doc_height"})
_DOUBLE = frozenset({"geo_latitude", "geo_longitude", "tr_total", "tr_tax", "tr_shipping", "ti_price",
                     "tr_total_base", "tr_tax_base", "tr_shipping_base", "ti_price_base"})
_BOOL = frozenset({"br_features_pdf", "br_features_flash", "br_features_java", "br_features_director",
                   "br_features_quicktime", "br_features_realplayer", "br_features_windowsmedia",
                   "br_features_gears", "br_features_silverlight", "br_cookies", "dvce_ismobile"})
_SELF_DESCRIBING = frozenset({"contexts", "derived_contexts", "unstruct_event"})

EVENT_CODES = {"pv": "page_view", "pp": "page_ping", "se": "struct", "ue": "unstruct", "tr": "transaction",
               "ti": "transaction_item"}
# Tracker protocol parameter -> enriched field (https://docs.snowplow.io tracker protocol).
TRACKER_PARAMS = {
    "eid": "event_id", "aid": "app_id", "p": "platform", "tv": "v_tracker", "tna": "name_tracker",
    "uid": "user_id", "duid": "domain_userid", "nuid": "network_userid", "tnuid": "network_userid",
    "vid": "domain_sessionidx", "sid": "domain_sessionid", "ip": "user_ipaddress", "ua": "useragent",
    "lang": "br_lang", "url": "page_url", "page": "page_title", "refr": "page_referrer",
    "dtm": "dvce_created_tstamp", "stm": "dvce_sent_tstamp", "ttm": "true_tstamp", "tz": "os_timezone",
    "cs": "doc_charset", "cd": "br_colordepth", "cookie": "br_cookies",
    "se_ca": "se_category", "se_ac": "se_action", "se_la": "se_label", "se_pr": "se_property", "se_va": "se_value",
    "tr_id": "tr_orderid", "tr_af": "tr_affiliation", "tr_tt": "tr_total", "tr_tx": "tr_tax",
    "tr_sh": "tr_shipping", "tr_ci": "tr_city", "tr_st": "tr_state", "tr_co": "tr_country", "tr_cu": "tr_currency",
    "ti_id": "ti_orderid", "ti_sk": "ti_sku", "ti_nm": "ti_name", "ti_ca": "ti_category", "ti_pr": "ti_price",
    "ti_qu": "ti_quantity", "ti_cu": "ti_currency",
    "pp_mix": "pp_xoffset_min", "pp_max": "pp_xoffset_max", "pp_miy": "pp_yoffset_min", "pp_may": "pp_yoffset_max",
}
_PAIRS = {"res": ("dvce_screenwidth", "dvce_screenheight"), "vp": ("br_viewwidth", "br_viewheight"),
          "ds": ("doc_width", "doc_height")}
PAYLOAD_DATA = "iglu:com.snowplowanalytics.snowplow/payload_data/"


def looks_enriched_json(obj: dict) -> bool:
    return "event_id" in obj and "collector_tstamp" in obj and "event" in obj


def looks_tracker(obj: dict) -> bool:
    return isinstance(obj.get("e"), str) and ("tv" in obj or "eid" in obj or "aid" in obj)


def looks_payload_data(obj: dict) -> bool:
    schema = obj.get("schema")
    return isinstance(schema, str) and schema.startswith(PAYLOAD_DATA) and isinstance(obj.get("data"), list)


def _typed(name: str, text: str):
    try:
        if name in _INT:
            return int(text)
        if name in _DOUBLE:
            return float(text)
        if name in _BOOL:
            if text in ("0", "1"):
                return text == "1"
            raise ValueError(text)
        if name in _SELF_DESCRIBING:
            value = orjson.loads(text)
            if not isinstance(value, dict):
                raise ValueError("not a self-describing JSON object")
            return value
    except (ValueError, orjson.JSONDecodeError):
        raise Rejected("invalid_field", f"{name}: not a valid {_kind(name)}") from None
    return text


def _kind(name):
    return ("integer" if name in _INT else "number" if name in _DOUBLE else "boolean (0/1)" if name in _BOOL
            else "self-describing JSON")


def enriched_from_tsv(line: str) -> dict:
    """The fields of one enriched TSV line (empty fields left out), typed like the analytics SDKs type them;
    contexts and the event's data stay self-describing JSON (``{"schema", "data"}``)."""
    values = line.split("\t")
    if len(values) != len(ENRICHED_FIELDS):
        raise Rejected("invalid_field", f"an enriched Snowplow event has {len(ENRICHED_FIELDS)} tab-separated "
                                        f"fields, this line has {len(values)}")
    return {name: _typed(name, value) for name, value in zip(ENRICHED_FIELDS, values) if value != ""}


def _b64_json(text: str, name: str):
    padded = text + "=" * (-len(text) % 4)
    try:
        return orjson.loads(base64.urlsafe_b64decode(padded.replace("+", "-").replace("/", "_")))
    except (binascii.Error, ValueError, orjson.JSONDecodeError):
        raise Rejected("invalid_field", f"{name}: not base64-encoded JSON") from None


def enriched_from_tracker(params: dict) -> dict:
    """Tracker protocol parameters -> enriched fields (unknown parameters keep their own names)."""
    out: dict = {}
    for key, value in params.items():
        if value is None or value == "":
            continue
        if not isinstance(value, str):
            value = orjson.dumps(value).decode() if isinstance(value, (dict, list)) else str(value)
        if key == "e":
            out["event"] = EVENT_CODES.get(value, value)
        elif key in ("ue_pr", "co"):
            try:
                out["unstruct_event" if key == "ue_pr" else "contexts"] = orjson.loads(value)
            except orjson.JSONDecodeError:
                raise Rejected("invalid_field", f"{key}: not JSON") from None
        elif key in ("ue_px", "cx"):
            out["unstruct_event" if key == "ue_px" else "contexts"] = _b64_json(value, key)
        elif key in _PAIRS:
            first, _, second = value.partition("x")
            if first.isdigit() and second.isdigit():
                out[_PAIRS[key][0]], out[_PAIRS[key][1]] = int(first), int(second)
            else:
                out[key] = value
        elif key in TRACKER_PARAMS:
            name = TRACKER_PARAMS[key]
            out[name] = _typed(name, value) if name not in _DOUBLE or _number(value) is not None else value
        else:
            out[key] = value
    return out  # dtm/stm/ttm stay as sent (epoch milliseconds); the mapping reads them as such


def tracker_records(obj) -> list[dict]:
    """The payloads of a tracker request body: a ``payload_data`` batch or one payload object."""
    return obj["data"] if looks_payload_data(obj) else [obj]


def query_params(line: str) -> dict:
    """A GET request's query string (``/i?e=pv&...`` or ``e=pv&...``) as a parameter dict."""
    query = line.split("?", 1)[1] if "?" in line else line
    return dict(parse_qsl(query, keep_blank_values=True))


def _number(value):
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return value
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def _schema_name(schema) -> str | None:
    # iglu:vendor/name/format/version
    if isinstance(schema, str) and schema.startswith("iglu:"):
        parts = schema[5:].split("/")
        if len(parts) == 4:
            return parts[1]
    return None


def _entities(fields: dict) -> list[tuple[str | None, object]]:
    """``(schema name, data)`` of every attached entity, from either form."""
    out = []
    for key in ("contexts", "derived_contexts"):
        value = fields.get(key)
        if isinstance(value, dict) and isinstance(value.get("data"), list):
            out += [(_schema_name(e.get("schema")), e.get("data")) for e in value["data"] if isinstance(e, dict)]
    for key, value in fields.items():
        if key.startswith(("contexts_", "derived_contexts_")) and isinstance(value, list):
            name = key.split("_", 1)[1].rsplit("_", 1)[0]  # vendor_name (JSON form loses the exact split)
            out += [(name, data) for data in value]
    return out


def _event_data(fields: dict):
    """``(schema, data)`` of a self-describing event, from either form."""
    ue = fields.get("unstruct_event")
    if isinstance(ue, dict):
        inner = ue.get("data")
        if isinstance(inner, dict) and "schema" in inner:
            return inner.get("schema"), inner.get("data")
        return ue.get("schema"), inner
    for key, value in fields.items():
        if key.startswith("unstruct_event_"):
            return key[len("unstruct_event_"):], value
    return None, None


def normalise_fields(fields: dict, limits: common.Limits) -> common.Normalised:
    """Map one event's enriched fields (any of the three forms, see the module docstring) to a canonical row."""
    event_id = common.id_text(fields.get("event_id"), "event_id") or common.derived_id(limits.source_id, fields)
    try:
        return _normalise(fields, event_id, limits)
    except Rejected as rej:
        rej.event_id = event_id
        raise


def _normalise(fields: dict, event_id: str, limits: common.Limits) -> common.Normalised:
    code = fields.get("event")
    schema, data = _event_data(fields)
    name = fields.get("event_name")
    props: dict = {}
    if code == "page_view" or code == "page_ping":
        kind, name = ("page", "Page Viewed") if code == "page_view" else ("track", "Page Ping")
        props = {k: fields[f] for k, f in (("url", "page_url"), ("title", "page_title"),
                                           ("referrer", "page_referrer"), ("path", "page_urlpath")) if f in fields}
        if code == "page_ping":
            props.update({k: fields[k] for k in ("pp_xoffset_min", "pp_xoffset_max", "pp_yoffset_min",
                                                 "pp_yoffset_max") if k in fields})
    elif code == "struct":
        kind, name = "track", fields.get("se_action")
        props = {k: fields[f] for k, f in (("category", "se_category"), ("action", "se_action"),
                                           ("label", "se_label"), ("property", "se_property")) if f in fields}
        if "se_value" in fields:
            number = _number(fields["se_value"])
            props["value"] = fields["se_value"] if number is None else number
    elif code == "transaction" or code == "transaction_item":
        prefix = "tr_" if code == "transaction" else "ti_"
        kind, name = "track", "Transaction" if code == "transaction" else "Transaction Item"
        props = {k[3:]: v for k, v in fields.items() if k.startswith(prefix)}
    elif code == "unstruct":
        name = name or _schema_name(schema) or (schema if isinstance(schema, str) else None)
        kind = "screen" if name == "screen_view" else "track"
        if kind == "screen":
            name = "Screen Viewed"
        if data is not None and not isinstance(data, dict):
            raise Rejected("invalid_field", "unstruct_event: the event's data must be an object")
        props = dict(data or {})
    elif code is None:
        raise Rejected("missing_event_name", "the record has no 'event' (e)")
    else:
        kind, name = "track", name or str(code)
    received_at = common.time_us(fields.get("collector_tstamp"), "collector_tstamp") or limits.now_us
    timestamp = received_at
    for key in ("true_tstamp", "derived_tstamp", "dvce_created_tstamp", "collector_tstamp"):
        value = common.time_us(fields.get(key), key)
        if value is not None:
            timestamp = value
            break
    sent_at = common.time_us(fields.get("dvce_sent_tstamp"), "dvce_sent_tstamp")
    context: dict = {k: fields[f] for k, f in (("app_id", "app_id"), ("platform", "platform"),
                                               ("ip", "user_ipaddress"), ("userAgent", "useragent"),
                                               ("locale", "br_lang")) if f in fields}
    page = {k: fields[f] for k, f in (("url", "page_url"), ("title", "page_title"), ("referrer", "page_referrer"))
            if f in fields}
    if page:
        context["page"] = page
    for entity_name, entity in _entities(fields):
        if isinstance(entity, dict):
            if "tenant_id" not in context and entity.get("tenant_id") is not None:
                context["tenant_id"] = entity["tenant_id"]
            if "consent" not in context and entity_name and entity_name.rsplit("_", 1)[-1] == "consent":
                context["consent"] = entity
    original = {k: v for k, v in fields.items() if k != "unstruct_event" and not k.startswith("unstruct_event_")}
    if schema is not None:
        original["event_schema"] = schema
    context["snowplow"] = original
    anonymous_id = (common.id_text(fields.get("domain_userid"), "domain_userid")
                    or common.id_text(fields.get("network_userid"), "network_userid"))
    user_id = common.id_text(fields.get("user_id"), "user_id")
    return common.build(event_id, kind, name, anonymous_id, user_id, timestamp, received_at, sent_at,
                        context, props, None, limits)


DESCRIPTION = "a Snowplow"


def detect(obj) -> bool:
    return isinstance(obj, dict) and (looks_payload_data(obj) or looks_tracker(obj) or looks_enriched_json(obj))


def events(obj, line: bytes, limits: common.Limits) -> list | None:
    """One ``Normalised`` or ``Rejected`` per event: an enriched JSON event, a tracker POST body (one event
    or a ``payload_data`` batch). None when the record is no JSON object."""
    if not isinstance(obj, dict):
        return None
    if looks_enriched_json(obj):
        return [common.guarded(None, line, lambda: normalise_fields(obj, limits))]
    many = looks_payload_data(obj)
    return [common.guarded(None, orjson.dumps(p) if many else line, lambda p=p: normalise_fields(
                enriched_from_tracker(p) if isinstance(p, dict) else common.not_object(p), limits))
            for p in tracker_records(obj)]


def looks_text(line: bytes) -> bool:
    """An enriched TSV line or a tracker GET query string (``e=pv&...``, ``/i?e=pv&...``)."""
    stripped = line.lstrip()
    return b"\t" in line or stripped.startswith((b"e=", b"/i?", b"/com.snowplowanalytics.snowplow/i?")) or b"&e=" in line


def text_event(text: str, line: bytes, limits: common.Limits):
    """The ``Normalised`` or ``Rejected`` event of a non-JSON line: enriched TSV, or a tracker GET query."""
    if "\t" in text:
        return common.guarded(None, line, lambda: normalise_fields(enriched_from_tsv(text), limits))
    return common.guarded(None, line, lambda: normalise_fields(enriched_from_tracker(query_params(text)), limits))
