"""The pipeline the fault tests run with `stream run`: topics come from the environment."""

import os

from helpers import payment_pipeline


def pipeline():
    """The payment pipeline; STREAM_TEST_PATH=columnar drops `Last`, so ranges take the
    columnar path (the README's example does), else the record path."""
    return payment_pipeline(os.environ["STREAM_TEST_APP"], os.environ["STREAM_TEST_SRC"],
                            os.environ["STREAM_TEST_OUT"],
                            last=os.environ.get("STREAM_TEST_PATH", "row") != "columnar")
