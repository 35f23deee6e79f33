"""schemathesis hooks for scripts/schemathesis.sh (loaded by schemathesis.toml).

The operations that take the key pair in their JSON body (mint, invalidate, revoke,
introspect) are out of reach of the document's security schemes, so every case schemathesis
makes up for them would stop at the 401 for an unknown key. Where a generated body holds a
string `keyId` and a string `keySecret`, they become the real key pair the script exports, and
the rest of the body (made up, valid or not) goes on to the handler. A body whose key fields
are missing or not strings keeps them, so the refusals of a malformed key pair are still
tested.

The bearer's user is never invalidated (schemathesis reuses the ids that responses show, so
it would otherwise find that user's id and kill the token every bearer operation runs with).

Revocation takes only a token of the caller's company (a made-up string is refused with a
400 naming that rule, which no schema can state): its string `token` becomes a token the
script minted for another user than the bearer's. Introspection keeps the made-up strings,
so the token parser still meets them.
"""

import os

import schemathesis


@schemathesis.hook
def filter_case(context, case):
    body = case.body
    if case.path == "/rest/v1/auth/invalidate" and isinstance(body, dict):
        return (
            body.get("userId") != os.environ["PERFORMCHAT_ST_USER_ID"]
            and body.get("externalId") != os.environ["PERFORMCHAT_ST_USER_EXTERNAL_ID"]
        )
    return True


@schemathesis.hook
def map_case(context, case):
    body = case.body
    if (
        isinstance(body, dict)
        and isinstance(body.get("keyId"), str)
        and isinstance(body.get("keySecret"), str)
    ):
        body = {
            **body,
            "keyId": os.environ["PERFORMCHAT_ST_KEY_ID"],
            "keySecret": os.environ["PERFORMCHAT_ST_KEY_SECRET"],
        }
        if case.path == "/rest/v1/auth/revoke" and isinstance(body.get("token"), str):
            body["token"] = os.environ["PERFORMCHAT_ST_REVOCABLE"]
        case.body = body
    return case
