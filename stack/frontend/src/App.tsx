import { useEffect, useState } from "react";
import { describeHealth, startJob, waitForJob, getHealth, type Fetcher, type Health, type Job } from "./api";

type Props = { fetcher?: Fetcher; pollMs?: number };

export default function App({ fetcher = (i, init) => fetch(i, init), pollMs = 500 }: Props) {
  const [health, setHealth] = useState<Health | null>(null);
  const [healthError, setHealthError] = useState<string | null>(null);
  const [text, setText] = useState("hello from the demo job");
  const [job, setJob] = useState<Job | null>(null);
  const [jobError, setJobError] = useState<string | null>(null);
  const [busy, setBusy] = useState(false);

  useEffect(() => {
    getHealth(fetcher).then(setHealth, (e: Error) => setHealthError(e.message));
  }, [fetcher]);

  async function runJob() {
    setBusy(true);
    setJobError(null);
    try {
      const started = await startJob(fetcher, text);
      setJob(started);
      await waitForJob(fetcher, started.id, { intervalMs: pollMs, onUpdate: setJob });
    } catch (e) {
      setJobError((e as Error).message);
    } finally {
      setBusy(false);
    }
  }

  return (
    <main style={{ fontFamily: "system-ui, sans-serif", maxWidth: 640, margin: "2rem auto" }}>
      <h1>Stack demo</h1>
      <section>
        <h2>API health</h2>
        <p>
          Status:{" "}
          <strong data-testid="health-status">
            {health ? describeHealth(health) : healthError ? `unreachable (${healthError})` : "checking…"}
          </strong>
        </p>
        {health && (
          <ul data-testid="versions">
            {Object.entries(health.versions ?? {}).map(([name, version]) => (
              <li key={name}>
                {name} {version}
              </li>
            ))}
            {Object.entries(health.checks).map(([name, check]) => (
              <li key={name}>
                {name} {check.version ?? ""} {check.ok ? "ok" : `down (${check.error ?? "error"})`}
              </li>
            ))}
          </ul>
        )}
      </section>
      <section>
        <h2>Background job</h2>
        <input aria-label="job text" value={text} onChange={(e) => setText(e.target.value)} maxLength={200} />{" "}
        <button onClick={runJob} disabled={busy || !text.trim()}>
          Start demo job
        </button>
        {job && (
          <p>
            Job <code>{job.id}</code>: <strong data-testid="job-state">{job.state}</strong>
          </p>
        )}
        {job?.state === "SUCCESS" && (
          <pre data-testid="job-result">{JSON.stringify(job.result, null, 2)}</pre>
        )}
        {job?.error && <p role="alert">Job failed: {job.error}</p>}
        {jobError && <p role="alert">{jobError}</p>}
      </section>
    </main>
  );
}
