import { cleanup, fireEvent, render, screen, waitFor } from "@testing-library/react";
import { afterEach, describe, expect, it } from "vitest";
import App from "./App";
import type { Fetcher } from "./api";

const reply = (status: number, body: unknown) =>
  new Response(JSON.stringify(body), { status, headers: { "Content-Type": "application/json" } });

afterEach(cleanup);

describe("App", () => {
  it("shows health, runs a job and shows its result", async () => {
    let polls = 0;
    const fetcher: Fetcher = async (url, init) => {
      if (url === "/api/health")
        return reply(200, { status: "ok", versions: { api: "1.0.0" }, checks: { redis: { ok: true, version: "7.0" } } });
      if (url === "/api/jobs" && init?.method === "POST") return reply(202, { id: "j1", state: "PENDING" });
      polls += 1;
      return reply(200, polls < 2 ? { id: "j1", state: "STARTED" } : { id: "j1", state: "SUCCESS", result: { upper: "HELLO" } });
    };
    render(<App fetcher={fetcher} pollMs={1} />);
    await waitFor(() => expect(screen.getByTestId("health-status").textContent).toBe("ok"));
    expect(screen.getByTestId("versions").textContent).toContain("api 1.0.0");

    fireEvent.click(screen.getByRole("button", { name: "Start demo job" }));
    await waitFor(() => expect(screen.getByTestId("job-state").textContent).toBe("SUCCESS"));
    expect(screen.getByTestId("job-result").textContent).toContain("HELLO");
  });

  it("says the API is unreachable when health fails", async () => {
    const fetcher: Fetcher = async () => new Response("bad gateway", { status: 502, statusText: "Bad Gateway" });
    render(<App fetcher={fetcher} />);
    await waitFor(() =>
      expect(screen.getByTestId("health-status").textContent).toBe("unreachable (HTTP 502: Bad Gateway)"),
    );
  });
});
