"""The pipeline the fault tests run with `stream run`: topics come from the environment."""

import os

from helpers import payment_pipeline


def pipeline():
    return payment_pipeline(os.environ["STREAM_TEST_APP"], os.environ["STREAM_TEST_SRC"],
                            os.environ["STREAM_TEST_OUT"])
