/// <reference types="vitest" />
import { defineConfig } from "vite";
import react from "@vitejs/plugin-react";

export default defineConfig({
  plugins: [react()],
  // In `npm run dev`, send /api to a locally running API (override with API_URL).
  server: { proxy: { "/api": process.env.API_URL ?? "http://127.0.0.1:8000" } },
  test: { environment: "jsdom" },
});
