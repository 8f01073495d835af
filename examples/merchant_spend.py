"""Per-merchant takings over 1-minute windows, from payments keyed by user: a re-keyed window.

The input is partitioned by user, so the driver re-keys it by merchant through the internal
topic `merchant-spend.repartition.0` (created at start) and windows that; every window is
still a function of the input partitions alone. Run it where `payments` and
`merchant-spend-1m` exist (or add `--create-topics 4`):

    stream run examples.merchant_spend:pipeline --bootstrap 127.0.0.1:9092
"""

from operators import ApproxDistinct, Count, Sum, col
from stream import Pipeline, Tumbling, seconds

pipeline = (
    Pipeline("merchant-spend")
    .source("payments", schema="schemas/payment.avsc", timestamp="ts",
            keyed_by="user_id")         # producers key payments by user ...
    .filter(col("amount") > 0)
    .key_by("merchant_id")              # ... so grouping by merchant goes through a repartition topic
    .window(Tumbling(minutes=1), grace=seconds(5),
            aggregate={"n": Count(), "total": Sum("amount"), "payers": ApproxDistinct("user_id")})
    .sink("merchant-spend-1m", schema="schemas/merchant_spend.avsc")
)
