"""Per-user spend over 1-minute event-time windows: the README's example pipeline.

Run it against any Kafka cluster that has the `payments` and `user-spend-1m` topics:

    stream run examples.user_spend:pipeline --bootstrap 127.0.0.1:9092
"""

from operators import Count, Max, Mean, Sum, col
from stream import Pipeline, Tumbling, seconds

pipeline = (
    Pipeline("user-spend")
    .source("payments", schema="schemas/payment.avsc", timestamp="ts",
            keyed_by="user_id")         # producers key payments by user (checked against key_by)
    .filter(col("amount") > 0)          # or any function of the record: lambda r: r["amount"] > 0
    .key_by("user_id")
    .window(Tumbling(minutes=1), grace=seconds(5),
            aggregate={"n": Count(), "total": Sum("amount"), "largest": Max("amount"),
                       "mean": Mean("amount")})
    .sink("user-spend-1m", schema="schemas/user_spend.avsc")
)
