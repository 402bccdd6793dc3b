import { describe, expect, it } from "vitest";
import { describeHealth, getHealth, isFinished, startJob, waitForJob, type Fetcher } from "./api";

const reply = (status: number, body: unknown) =>
  new Response(JSON.stringify(body), { status, headers: { "Content-Type": "application/json" } });

describe("health", () => {
  it("reads a degraded (503) health body instead of failing", async () => {
    const body = { status: "degraded", versions: {}, checks: { redis: { ok: true }, django: { ok: false } } };
    const fetcher: Fetcher = async () => reply(503, body);
    const health = await getHealth(fetcher);
    expect(describeHealth(health)).toBe("degraded (down: django)");
  });

  it("reports an ok stack plainly", () => {
    expect(describeHealth({ status: "ok", versions: {}, checks: { redis: { ok: true } } })).toBe("ok");
  });
});

describe("jobs", () => {
  it("surfaces the API's detail on errors, e.g. rate limiting", async () => {
    const fetcher: Fetcher = async () => reply(429, { detail: "rate limit exceeded: 60 requests per minute" });
    await expect(startJob(fetcher, "x")).rejects.toThrow("HTTP 429: rate limit exceeded: 60 requests per minute");
  });

  it("sends the text as JSON", async () => {
    let sent: RequestInit | undefined;
    const fetcher: Fetcher = async (_url, init) => {
      sent = init;
      return reply(202, { id: "j1", state: "PENDING" });
    };
    await startJob(fetcher, "hi there");
    expect(sent?.method).toBe("POST");
    expect(JSON.parse(String(sent?.body))).toEqual({ text: "hi there" });
  });

  it("polls until the job finishes and reports each state", async () => {
    const states = ["PENDING", "STARTED", "SUCCESS"];
    const seen: string[] = [];
    const fetcher: Fetcher = async (url) => {
      expect(url).toBe("/api/jobs/abc");
      const state = states.shift()!;
      return reply(200, { id: "abc", state, result: state === "SUCCESS" ? { upper: "HI" } : undefined });
    };
    const job = await waitForJob(fetcher, "abc", { sleep: async () => {}, onUpdate: (j) => seen.push(j.state) });
    expect(job.result).toEqual({ upper: "HI" });
    expect(seen).toEqual(["PENDING", "STARTED", "SUCCESS"]);
  });

  it("gives up with a clear message after the timeout", async () => {
    const fetcher: Fetcher = async () => reply(200, { id: "slow", state: "PENDING" });
    await expect(
      waitForJob(fetcher, "slow", { intervalMs: 100, timeoutMs: 300, sleep: async () => {} }),
    ).rejects.toThrow("job slow still PENDING after 0.3s");
  });

  it("knows which states are final", () => {
    expect(isFinished("SUCCESS")).toBe(true);
    expect(isFinished("FAILURE")).toBe(true);
    expect(isFinished("STARTED")).toBe(false);
  });
});
