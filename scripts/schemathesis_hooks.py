"""schemathesis hooks (scripts/schemathesis.sh): what JSON Schema cannot say.

Some rules of the contract cannot be written in JSON Schema (the proto
comments and the README state them), so a request that the schema calls
valid may rightly be refused for them. For schema-valid (positive) cases
only, this hook makes generated data meet them; negative cases are sent as
generated, and every check, positive_data_acceptance included, judges the
answers. Each rule and what is done about it:

- A reference (`account_id`, `contact_ids`, …; the schema gives its id
  pattern) must name a live record of the tenant: every id-shaped value in a
  body becomes the id of a record of that kind created up front.
- Money and quantities have at most 15 significant digits: every finite
  number keeps its first 15 (truncated toward zero: no bound is crossed).
- Mirrored fields must agree when both are sent (an activity's occurred_at
  and activity_date, a quote's validity_date and valid_until): the second is
  dropped.
- A line item's currency must be its quote's: it is dropped (the quote's is
  taken).
- Within one batch, external ids (upserts) and ids (updates, deletes) are
  distinct: repeats get a suffix / are dropped.
- `filter` and `order_by` are small languages (AIP-160, AIP-132) that a
  regular expression cannot describe; their parsers have property tests and
  a fuzz target of their own. `page_token` is opaque: only the server's own
  tokens are valid. Positive cases send none of the three.
- A line's total (quantity × unit_price − discount) and its quote's sum have
  the same 15-digit bound as any money (and every positive line lands on the
  one shared quote), and an amount discount cannot exceed quantity ×
  unit_price: quantity and unit_price become whole numbers from 1 to 9999,
  the discount is left out.
- An update's explicit `update_mask` may name a required field the body
  leaves out, which clears it: positive updates send no `update_mask` (the
  body's keys make it). A contact keeps a first name, last name or email:
  an update blanking them all gets a first name.
- Within one batch, upserts' external ids are compared trimmed, as stored.
- Stateful links can carry one collection's record id into another's path
  (`/deals/acc_…`): a path id of the wrong kind becomes a well-formed id of
  the right one (which names no record: 404).
- A shared record deleted by a test case is undeleted after it.
- A webhook URL must resolve to a public address, and this machine resolves
  no public names: it becomes a public IP literal. Redelivery can only start
  at or below the tenant's latest sequence: it starts at 0.
- `request_id` query values that do not match their declared pattern (the
  stateful phase fills `*_id` parameters with captured record ids) become
  fresh UUIDs.
- A custom-field definition's attributes depend on its type (options only
  and always for enum and multi_enum, max_length for string, bounds for
  number and integer, whole for integer, minimum ≤ maximum, unique not for
  boolean or multi_enum): the others are dropped or repaired. Its key is
  unique per resource type: it gets a fresh `st_…` key (which no generated
  record uses, so the shared tenant's records stay valid). `required` is
  left out: live records without the key would conflict with it. Updates
  and dry runs send the type-independent fields only (label, description;
  not the immutable resource_type, key and type).
"""

import decimal
import json
import math
import os
import re
import urllib.error
import urllib.request
import uuid

import schemathesis

ID = re.compile(r"^(acc|con|deal|act|qte|li)_[0-7][0-9A-HJKMNP-TV-Za-hjkmnp-tv-z]{25}$")
_ids: dict[str, str] = {}


def _post(path: str, body: dict) -> str:
    req = urllib.request.Request(
        os.environ["CRM_HTTP"] + "/api/v1/crm/" + path,
        data=json.dumps(body).encode(),
        headers={
            "Authorization": "Bearer " + os.environ["CRM_TOKEN"],
            "Content-Type": "application/json",
        },
        method="POST",
    )
    with urllib.request.urlopen(req, timeout=10) as resp:
        return json.load(resp)["id"]


def _existing(prefix: str) -> str:
    if not _ids:
        acc = _post("accounts", {"name": "schemathesis account"})
        deal = _post("deals", {"name": "schemathesis deal", "account_id": acc})
        qte = _post("quotes", {"name": "schemathesis quote", "account_id": acc, "deal_id": deal})
        _ids.update(
            acc=acc,
            deal=deal,
            qte=qte,
            con=_post("contacts", {"first_name": "schemathesis", "account_id": acc}),
            act=_post("activities", {"type": "note", "subject": "schemathesis", "account_id": acc}),
            li=_post("line-items", {"quote_id": qte, "quantity": 1, "unit_price": 1}),
        )
    return _ids[prefix]


def _digits(x: float) -> float:
    if not math.isfinite(x) or x == 0:
        return x
    d = decimal.Decimal(x)
    exp = d.adjusted() - 14
    return float(d.quantize(decimal.Decimal(1).scaleb(exp), rounding=decimal.ROUND_DOWN))


def _fix(v):
    if isinstance(v, dict):
        return {k: _fix(x) for k, x in v.items()}
    if isinstance(v, list):
        return [_fix(x) for x in v]
    if isinstance(v, str) and ID.match(v):
        return _existing(v.split("_")[0])
    if isinstance(v, float):
        return _digits(v)
    return v


UUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")
MIRRORS = [("occurred_at", "activity_date"), ("validity_date", "valid_until")]


RESOURCES = ("account", "contact", "deal", "activity", "quote", "line_item", "webhook")


def _resource(obj):
    """The record a request object carries (`{"account": {...}}`), if any."""
    if isinstance(obj, dict):
        for key in RESOURCES:
            if isinstance(obj.get(key), dict):
                return obj[key]
    return None


def _records(body):
    """The record objects of a body: itself, its resource field, batch items'."""
    if not isinstance(body, dict):
        return []
    out = [body]
    if _resource(body) is not None:
        out.append(_resource(body))
    for item in body.get("requests") or []:
        if _resource(item) is not None:
            out.append(_resource(item))
    return out


def _small(x):
    if not isinstance(x, (int, float)) or isinstance(x, bool) or not math.isfinite(x):
        return x
    return min(max(int(abs(x)), 1), 9999)


NUMERIC = ("number", "integer")


def _definition(d: dict, method: str) -> None:
    d.pop("required", None)
    if method != "POST":
        for k in ("options", "max_length", "minimum", "maximum", "unique", "type", "key", "resource_type"):
            d.pop(k, None)
        return
    d["key"] = "st_" + uuid.uuid4().hex[:20]
    ty = d.get("type")
    if ty in ("enum", "multi_enum"):
        opts = [o for o in d.get("options") or [] if isinstance(o, str) and o]
        d["options"] = list(dict.fromkeys(opts)) or ["a"]
    else:
        d.pop("options", None)
    if ty != "string":
        d.pop("max_length", None)
    if ty in NUMERIC:
        for k in ("minimum", "maximum"):
            if isinstance(d.get(k), (int, float)) and ty == "integer":
                d[k] = float(math.trunc(d[k]))
        lo, hi = d.get("minimum"), d.get("maximum")
        if isinstance(lo, (int, float)) and isinstance(hi, (int, float)) and lo > hi:
            d["minimum"], d["maximum"] = hi, lo
    else:
        d.pop("minimum", None)
        d.pop("maximum", None)
    if ty in ("boolean", "multi_enum"):
        d.pop("unique", None)


def _rules(path: str, body, method: str) -> None:
    if "field-definitions" in path and isinstance(body, dict):
        if path.endswith(":check"):
            body.pop("update_mask", None)
            d = body.get("field_definition")
            if isinstance(d, dict):
                d.pop("id", None)
                _definition(d, "POST")
        else:
            _definition(body, method)
        return
    for rec in _records(body):
        if "contacts" in path and method == "PATCH":
            names = ("first_name", "last_name", "email")
            if any(k in rec for k in names) and not any(str(rec.get(k) or "").strip() for k in names):
                rec["first_name"] = "schemathesis"
        if "line-items" in path:
            for k in ("quantity", "unit_price"):
                if k in rec:
                    rec[k] = _small(rec[k])
            rec.pop("discount", None)
        for a, b in MIRRORS:
            if rec.get(a) is not None and rec.get(b) is not None:
                del rec[b]
        if "line-items" in path:
            rec.pop("currency", None)
        if "webhooks" in path and isinstance(rec.get("url"), str):
            rec["url"] = "https://1.1.1.1/crm-hook"
    if path.endswith(":redeliver") and isinstance(body, dict):
        body["after_sequence"] = "0"
    if isinstance(body, dict) and isinstance(body.get("requests"), list):
        seen_ext, seen_id, items = set(), set(), []
        for i, item in enumerate(body["requests"]):
            rec = _resource(item)
            recs = [rec] if rec is not None else []
            rid = recs[0].get("id") if recs else None
            if rid and ":batchUpdate" in path:
                if rid in seen_id:
                    continue
                seen_id.add(rid)
            ext = recs[0].get("external_id") if recs else None
            if isinstance(ext, str) and ":batchUpsert" in path:
                if ext.strip(" \t\n\r\f") in seen_ext:
                    recs[0]["external_id"] = f"{ext.strip()}-{i}"
                seen_ext.add(recs[0]["external_id"].strip(" \t\n\r\f"))
            items.append(item)
        body["requests"] = items
    if path.endswith(":batchDelete") and isinstance(body, dict) and isinstance(body.get("ids"), list):
        body["ids"] = list(dict.fromkeys(body["ids"]))


PREFIX = {"accounts": "acc", "contacts": "con", "deals": "deal", "activities": "act",
          "quotes": "qte", "line-items": "li", "webhooks": "whk", "field-definitions": "fld"}


@schemathesis.hook
def after_call(context, case, response):
    """A shared record deleted by a test case is undeleted for the next."""
    if case.method.upper() != "DELETE":
        return
    for v in (case.path_parameters or {}).values():
        if isinstance(v, str) and v in _ids.values():
            collection = case.operation.path.split("/")[4]
            try:
                _post(f"{collection}/{v}:undelete", {})
            except urllib.error.HTTPError as e:
                if e.code != 409:  # 409: it was not deleted after all
                    raise


@schemathesis.hook
def before_call(context, case, **kwargs):
    meta = case.meta
    if meta is None or not meta.generation.mode.is_positive:
        return
    path = case.operation.path
    params = case.path_parameters or {}
    parts = path.split("/")
    if "id" in params and len(parts) > 4 and parts[4] in PREFIX:
        prefix = PREFIX[parts[4]]
        v = params["id"]
        if isinstance(v, str) and not v.startswith(prefix + "_"):
            params["id"] = prefix + "_" + "0" * 26
    # History and erasure name the collection as a variable: a record of it
    # (erasure is refused anyway: the token has no crm:purge scope).
    collection = params.get("collection")
    if isinstance(collection, str) and collection in PREFIX and collection not in ("webhooks", "field-definitions"):
        v = params.get("id")
        if isinstance(v, str) and not v.startswith(PREFIX[collection] + "_"):
            params["id"] = _existing(PREFIX[collection])
    if case.method.upper() == "PATCH" and isinstance(case.query, dict):
        case.query.pop("update_mask", None)
    if isinstance(case.body, (dict, list)):
        # Ids to delete stay as generated: they must not be the shared records.
        if not path.endswith(":batchDelete"):
            case.body = _fix(case.body)
        _rules(path, case.body, case.method.upper())
    query = case.query if isinstance(case.query, dict) else None
    if query:
        for name in ("filter", "order_by", "page_token"):
            query.pop(name, None)
        # History's `fields` must name fields of the collection; `time` is
        # any RFC 3339 instant (the schema's date-time admits forms, such as
        # a leap second, that a protobuf Timestamp does not).
        if path.endswith("/history"):
            query.pop("fields", None)
        if path.endswith("/history:at") and "time" in query:
            query["time"] = "2099-01-01T00:00:00Z"
        rid = query.get("request_id")
        if isinstance(rid, str) and rid and not UUID.match(rid):
            query["request_id"] = str(uuid.uuid4())
