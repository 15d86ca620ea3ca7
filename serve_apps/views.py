"""How a job record is shown: to pollers, to BFL clients, in webhooks. Image URLs are signed."""

from __future__ import annotations

from serve_apps.protocol import GetResultResponse, JobResponse, JobStatus, Progress, ResultPayload
from serve_apps.signing import UrlSigner


class JobViews:
    def __init__(self, signer: UrlSigner):
        self.signer = signer

    def image_urls(self, record: dict) -> list[str]:
        base = record.get("base_url", "").rstrip("/")
        return [base + self.signer.sign(f"/v1/images/{record['id']}/{name}") for name in record["images"]]

    def job(self, record: dict, progress: dict | None = None, queue_position: int | None = None) -> JobResponse:
        webhook = record.get("webhook")
        return JobResponse(
            **{
                key: record[key]
                for key in ("id", "model", "status", "stage", "seed", "timings_s", "batch", "attempts", "error", "created_at", "updated_at", "request")
            },
            progress=Progress(step=progress["step"], total=progress["total"]) if progress else None,
            queue_position=queue_position,
            images=self.image_urls(record),
            webhook_deliveries=webhook["deliveries"] if webhook else None,
            warnings=record.get("warnings", []),
            usage=record.get("usage"),
        )

    def webhook_payload(self, record: dict) -> dict:
        return self.job(record).model_dump(mode="json")

    def bfl_result(self, record: dict, progress: dict | None) -> GetResultResponse:
        """BFL's get_result shape. Cancelled shows as Error, so BFL clients stop polling."""
        status = JobStatus(record["status"])
        if status == JobStatus.READY:
            urls = self.image_urls(record)
            params = record["request"]
            result = ResultPayload(
                sample=urls[0],
                samples=urls,
                seed=record["seed"],
                prompt=params["prompt"],
                width=params["width"],
                height=params["height"],
                output_format=params["output_format"],
            )
            return GetResultResponse(id=record["id"], status=status, result=result, progress=1.0)
        if status == JobStatus.PENDING:
            fraction = progress["step"] / progress["total"] if progress else 0.0
            return GetResultResponse(id=record["id"], status=status, progress=fraction, details={"stage": record["stage"]})
        shown = JobStatus.ERROR if status == JobStatus.CANCELLED else status
        return GetResultResponse(id=record["id"], status=shown, details={"error": record["error"]})
