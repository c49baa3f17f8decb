/**
 * Pure helpers of the benchmark runner (bench/all.ts): statistics, number
 * formatting, the report it prints and its arguments. No I/O here, so that
 * test/unit/bench-report.test.ts covers all of it.
 */

export interface Spread {
  min: number;
  median: number;
  max: number;
  n: number;
}

/** min / median (mean of the middle two for an even count) / max; undefined when empty. */
export function spreadOf(xs: readonly number[]): Spread | undefined {
  if (xs.length === 0) return undefined;
  const s = [...xs].sort((a, b) => a - b);
  const mid = s.length % 2 === 1 ? s[(s.length - 1) / 2]! : (s[s.length / 2 - 1]! + s[s.length / 2]!) / 2;
  return { min: s[0]!, median: mid, max: s[s.length - 1]!, n: s.length };
}

/**
 * Smallest and largest of any number of values; undefined when empty.
 * `Math.max(...xs)` passes every value as an argument and throws "Maximum
 * call stack size exceeded" past about 10^5 of them (a failover's
 * acknowledged writes on a quiet machine).
 */
export function extremes(xs: readonly number[]): { min: number; max: number } | undefined {
  if (xs.length === 0) return undefined;
  let min = xs[0]!;
  let max = xs[0]!;
  for (const x of xs) {
    if (x < min) min = x;
    if (x > max) max = x;
  }
  return { min, max };
}

/** Nearest-rank percentile (p in [0, 100]); undefined when empty. */
export function percentile(xs: readonly number[], p: number): number | undefined {
  if (xs.length === 0) return undefined;
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.max(0, Math.ceil((p / 100) * s.length) - 1))];
}

/** A number with fixed digits, or "n/a". */
export function num(v: number | undefined, digits = 0): string {
  return v === undefined || !Number.isFinite(v) ? "n/a" : v.toFixed(digits);
}

/** "min A  median B  max C unit (n=N)"; one value alone when there is one. */
export function fmtSpread(xs: readonly number[], digits: number, unit: string): string {
  const s = spreadOf(xs);
  if (!s) return "n/a";
  const u = unit ? ` ${unit}` : "";
  if (s.n === 1) return `${num(s.min, digits)}${u}`;
  return `min ${num(s.min, digits)}  median ${num(s.median, digits)}  max ${num(s.max, digits)}${u} (n=${s.n})`;
}

/** "p50 A  p99 B  max C unit (n=N)". */
export function fmtPercentiles(xs: readonly number[], digits: number, unit: string): string {
  if (xs.length === 0) return "n/a";
  const u = unit ? ` ${unit}` : "";
  return `p50 ${num(percentile(xs, 50), digits)}  p99 ${num(percentile(xs, 99), digits)}  max ${num(percentile(xs, 100), digits)}${u} (n=${xs.length})`;
}

/** value / baseline, or undefined when the baseline is missing or 0. */
export function ratio(value: number | undefined, baseline: number | undefined): number | undefined {
  if (value === undefined || baseline === undefined || !Number.isFinite(value) || !Number.isFinite(baseline) || baseline === 0) return undefined;
  return value / baseline;
}

/** The three load averages as the report prints them. */
export function fmtLoad(load: readonly number[]): string {
  return load.map((l) => l.toFixed(2)).join(" ");
}

export interface ReportRow {
  label: string;
  value: string;
}

export interface ReportSection {
  title: string;
  rows: ReportRow[];
  /** Set when the section failed; what it measured before is kept. */
  error?: string;
}

/** The runner's report: a header, sections of label/value rows, a footer. */
export class Report {
  readonly sections: ReportSection[] = [];
  private current?: ReportSection;

  section(title: string): ReportSection {
    this.current = { title, rows: [] };
    this.sections.push(this.current);
    return this.current;
  }

  add(label: string, value: string): void {
    if (!this.current) this.section("");
    this.current!.rows.push({ label, value });
  }

  fail(error: string): void {
    if (!this.current) this.section("");
    this.current!.error = error;
  }

  render(header: readonly string[], footer: readonly string[]): string {
    const width = Math.max(0, ...this.sections.flatMap((s) => s.rows.map((r) => r.label.length)));
    const out: string[] = [...header, ""];
    for (const s of this.sections) {
      out.push(s.title);
      for (const r of s.rows) out.push(`  ${r.label.padEnd(width)}  ${r.value}`);
      if (s.rows.length === 0 && !s.error) out.push("  (nothing measured)");
      if (s.error) out.push(`  FAILED: ${s.error}`);
      out.push("");
    }
    out.push(...footer);
    return `${out.join("\n")}\n`;
  }
}

export const SECTIONS = ["postgres", "bootstrap", "redis", "balancer", "backup", "failover", "engine"] as const;
export type SectionName = (typeof SECTIONS)[number];

export interface RunnerOptions {
  /** Smaller sizes and shorter durations: a smoke run, not figures to quote. */
  quick: boolean;
  /** Sections to run, in the runner's order. */
  sections: SectionName[];
}

export const RUNNER_USAGE = `usage: npm run bench -- [--quick] [--only S[,S...]] [--skip S[,S...]]
  --quick   smaller sizes and shorter durations (a smoke run; its figures are not the project's figures)
  --only S  run only these sections
  --skip S  leave these sections out
sections, in order: ${SECTIONS.join(", ")}
`;

function sectionList(flag: string, value: string | undefined): SectionName[] {
  if (value === undefined || value === "") throw new Error(`${flag} needs a section name (${SECTIONS.join(", ")})`);
  const names = value.split(",").map((s) => s.trim());
  for (const n of names) if (!(SECTIONS as readonly string[]).includes(n)) throw new Error(`${flag}: unknown section ${n} (expected ${SECTIONS.join(", ")})`);
  return names as SectionName[];
}

/** Parses the runner's arguments; "help" when asked for usage. */
export function parseRunnerArgs(argv: readonly string[]): RunnerOptions | "help" {
  let quick = false;
  let only: SectionName[] | undefined;
  const skip = new Set<SectionName>();
  for (let i = 0; i < argv.length; i++) {
    const flag = argv[i]!;
    if (flag === "--help" || flag === "-h") return "help";
    else if (flag === "--quick") quick = true;
    else if (flag === "--only") only = [...(only ?? []), ...sectionList(flag, argv[++i])];
    else if (flag === "--skip") for (const s of sectionList(flag, argv[++i])) skip.add(s);
    else throw new Error(`unknown argument ${flag}\n${RUNNER_USAGE}`);
  }
  const chosen = only ? new Set(only) : new Set(SECTIONS);
  return { quick, sections: SECTIONS.filter((s) => chosen.has(s) && !skip.has(s)) };
}
