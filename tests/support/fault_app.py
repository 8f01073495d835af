"""The pipeline the fault tests run with `stream run`: topics come from the environment."""

import os

from helpers import payment_pipeline


def by_merchant(r):
    return dict(r, user_id=r["merchant_id"])


def pipeline():
    """The payment pipeline; STREAM_TEST_PATH=columnar drops `Last`, so ranges take the
    columnar path (the README's example does), else the record path. STREAM_TEST_PATH=rekey
    windows by merchant (in the `user_id` field) through a repartition topic: the input is
    partitioned by user."""
    path = os.environ.get("STREAM_TEST_PATH", "row")
    return payment_pipeline(os.environ["STREAM_TEST_APP"], os.environ["STREAM_TEST_SRC"],
                            os.environ["STREAM_TEST_OUT"], last=path == "row",
                            map_fn=by_merchant if path == "rekey" else None,
                            repartition=True if path == "rekey" else None)
