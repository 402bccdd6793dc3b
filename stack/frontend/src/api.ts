// Thin client for the API under /api. Every function takes the fetch to use, so the
// logic is testable without a network and the app passes window.fetch.
export type Check = { ok: boolean; version?: string; error?: string };
export type Health = {
  status: string;
  versions?: Record<string, string>; // absent in production (no software versions)
  checks: Record<string, Check>;
};
export type Job = { id: string; state: string; result?: unknown; error?: string };
export type Fetcher = (input: string, init?: RequestInit) => Promise<Response>;

const FINISHED = new Set(["SUCCESS", "FAILURE", "REVOKED"]);

export function isFinished(state: string): boolean {
  return FINISHED.has(state);
}

async function json<T>(resp: Response, allowed: number[] = []): Promise<T> {
  if (!resp.ok && !allowed.includes(resp.status)) {
    let detail = resp.statusText;
    try {
      const body = await resp.json();
      if (body && typeof body.detail === "string") detail = body.detail;
    } catch {
      /* non-JSON error body: keep the status text */
    }
    throw new Error(`HTTP ${resp.status}: ${detail}`);
  }
  return (await resp.json()) as T;
}

// 503 still carries a health body describing what is down.
export async function getHealth(fetcher: Fetcher): Promise<Health> {
  return json<Health>(await fetcher("/api/health"), [503]);
}

export async function startJob(fetcher: Fetcher, text: string): Promise<Job> {
  const resp = await fetcher("/api/jobs", {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ text }),
  });
  return json<Job>(resp);
}

export async function getJob(fetcher: Fetcher, id: string): Promise<Job> {
  return json<Job>(await fetcher(`/api/jobs/${encodeURIComponent(id)}`));
}

export type WaitOptions = {
  intervalMs?: number;
  timeoutMs?: number;
  sleep?: (ms: number) => Promise<void>;
  onUpdate?: (job: Job) => void;
};

const realSleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

// Poll until the job finishes; reject with a clear message when it takes too long.
export async function waitForJob(fetcher: Fetcher, id: string, opts: WaitOptions = {}): Promise<Job> {
  const { intervalMs = 500, timeoutMs = 30000, sleep = realSleep, onUpdate } = opts;
  for (let waited = 0; ; waited += intervalMs) {
    const job = await getJob(fetcher, id);
    onUpdate?.(job);
    if (isFinished(job.state)) return job;
    if (waited >= timeoutMs) throw new Error(`job ${id} still ${job.state} after ${timeoutMs / 1000}s`);
    await sleep(intervalMs);
  }
}

export function describeHealth(health: Health): string {
  const down = Object.entries(health.checks)
    .filter(([, c]) => !c.ok)
    .map(([name]) => name);
  return down.length ? `${health.status} (down: ${down.join(", ")})` : health.status;
}
