// generated from protocol/types.py, methods.py and control.py by generate_ts.py: do not edit
// Nightlab's LSP extensions: method names and payload types. See protocol/METHODS.md.

export const PROTOCOL_VERSION = 2;
export const EXPERIMENTAL_CAPABILITY = "nightlabProtocol";

export const Methods = {
  loopState: "nightlab/loopState",
  experimentStarted: "nightlab/experimentStarted",
  experimentProgress: "nightlab/experimentProgress",
  experimentFinished: "nightlab/experimentFinished",
  experiments: "nightlab/experiments",
  experimentDiff: "nightlab/experimentDiff",
  experimentCurve: "nightlab/experimentCurve",
} as const;

export const Commands = {
  loopStart: "nightlab.loop.start",
  loopPause: "nightlab.loop.pause",
  loopResume: "nightlab.loop.resume",
  loopStop: "nightlab.loop.stop",
  loopStatus: "nightlab.loop.status",
  loopLineage: "nightlab.loop.lineage",
  experimentAccept: "nightlab.experiment.accept",
  experimentApplyBest: "nightlab.experiment.applyBest",
  experimentReject: "nightlab.experiment.reject",
  experimentRerun: "nightlab.experiment.rerun",
  experimentShowDiff: "nightlab.experiment.showDiff",
  baselineMeasure: "nightlab.baseline.measure",
} as const;

export type LoopState = "idle" | "proposing" | "running" | "deciding" | "paused" | "stopped" | "errored";
export type ExperimentStatus = "running" | "keep" | "discard" | "crash" | "interrupted";
export type Verdict = "keep" | "discard" | "crash" | "interrupted";
export type MetricDirection = "lower" | "higher";
export type Review = "accepted" | "rejected";
export type InFile = "all" | "some" | "none";

/** One experiment as a client shows it: the ledger record, flattened. */
export interface ExperimentPayload {
  number: number;
  tag: string;
  status: ExperimentStatus;
  description: string;
  hypothesis: string;
  /** the metric (mean of its runs); null while running or after a crash */
  metric?: number | null;
  /** metric minus the best before it; negative is better when lower is better */
  delta?: number | null;
  /** the noise estimate the verdict used */
  sigma?: number | null;
  /** the gain in standard errors */
  z?: number | null;
  /** training runs behind the metric */
  repeats?: number | null;
  memoryGb?: number | null;
  /** wall clock of all its runs */
  durationS?: number | null;
  agent: string;
  /** what the agent's proposal cost */
  costUsd?: number | null;
  commit: string;
  parentCommit: string;
  /** ISO 8601 */
  startedAt: string;
  finishedAt?: string | null;
  /** why it was kept or discarded, or how it crashed */
  reason: string;
  /** the slot that ran it ("cpu0", "gpu1", ...) */
  slot?: string | null;
  /** one line: "train.py: +3 -1 lines" */
  diffSummary: string;
  /** the unchanged code, run to measure where the loop starts */
  baseline: boolean;
  /** the experiment this one runs again */
  rerunOf?: number | null;
  /** the person's verdict, when they gave one */
  review?: Review | null;
  /** when they gave it (ISO 8601) */
  reviewedAt?: string | null;
  inFile?: InFile | null;
  /** the tag's lineage (null: 1, before lineages); verdicts compare only its own */
  lineage?: number | null;
  /** "time" | "tokens"; null: a record from before budgets were recorded */
  budgetMode?: string | null;
  /** seconds or tokens */
  budgetAmount?: number | null;
  /** "cpu", "cuda:<name>", or the slot's kind ("gpu") */
  device?: string | null;
  /** true: the run's own printed number, no judge measured it; null: unknown */
  selfReported?: boolean | null;
  /** the cluster node that trained it (Ray), null: this machine */
  node?: string | null;
  /** the keep in another lineage this experiment re-applies ("gpu #12") */
  portOf?: string | null;
  /** lineages whose port of this keep was kept too */
  replicatedIn: string[];
}

/** A progress sample of a running experiment. */
export interface ProgressPayload {
  number: number;
  step: number;
  /** budgeted training time so far */
  elapsedS: number;
  loss?: number | null;
  tokPerS?: number | null;
  /** percent of the device's peak FLOP/s */
  mfu?: number | null;
  /** as the script reports it (the default train.py: the schedule's multiplier) */
  lr?: number | null;
  /** 0..1 of the budget, when known */
  fraction?: number | null;
  /** "run", "smoke", or "repeat-<k>" for the k-th confirmation run */
  stage: string;
  /** the workspace folder (a path) */
  root?: string | null;
}

export interface BestPayload {
  number: number;
  metric: number;
}

export interface ClusterNode {
  /** Ray's node id */
  id: string;
  /** its IP address */
  address: string;
  /** what it has: CPU, GPU, custom (a hardware class) */
  resources: Record<string, number>;
}

/** The Ray cluster a loop runs on (`[run] executor = "ray"`), as its loop process last saw it. */
export interface ClusterPayload {
  /** what the loop joined ("auto", or the head's host:port); nodes: the live ones */
  address: string;
  nodes: ClusterNode[];
  /** the nodes' resources together */
  total: Record<string, number>;
  /** what the runs hold now (a run's resources: a slot) */
  inUse: Record<string, number>;
  /** the cluster did not answer: why */
  error: string;
}

/** One [[lineage]] of the workspace: a tag with its own baseline, noise and frontier (loop/swarm.py). */
export interface LineagePayload {
  /** its tag */
  name: string;
  /** what a run asks the cluster for ("num_gpus=1"); "" for the defaults */
  resources: string;
  /** the agent's focus for it */
  focus: string;
  experiments: number;
  best?: BestPayload | null;
  /** its baseline's metric */
  baseline?: number | null;
  /** its loop process answers */
  running: boolean;
  /** other lineages' keeps re-applied here and judged */
  ports: number;
  /** of those, the ones it kept (each replicates an idea) */
  portsKept: number;
  /** its own keeps that another lineage kept a port of */
  replicated: number;
}

/** Where the loop of one workspace folder stands. */
export interface LoopStatePayload {
  state: LoopState;
  /** what it does now, or why it stopped */
  reason: string;
  tag: string;
  agent: string;
  /** "60 s" or "1,000,000 tokens" per experiment */
  budget: string;
  metricName: string;
  direction: MetricDirection;
  best?: BestPayload | null;
  /** the baseline's metric */
  baseline?: number | null;
  experimentsRun: number;
  /** numbers of the experiments training now */
  running: number[];
  /** spent by the agent on this tag so far */
  costUsd: number;
  /** the workspace folder (a path) */
  root?: string | null;
  /** "noise" | "strict" */
  policy: string;
  /** the Claude model, when the agent is anthropic */
  model?: string | null;
  /** "auto" | "required" | "off" */
  sandbox: string;
  baselineRepeats?: number | null;
  /** 0: no limit */
  maxExperiments?: number | null;
  /** null: no loop process runs for this folder */
  pid?: number | null;
  /** its log file, when detached */
  log?: string | null;
  /** the loop ended without stopping (kill -9, a crash); `reason` says so, with its log's tail */
  died: boolean;
  lineages: LineagePayload[];
  /** null: not on Ray, or no loop process attached */
  cluster?: ClusterPayload | null;
}

export interface ExperimentStartedParams {
  experiment: ExperimentPayload;
  /** the workspace folder (a path) */
  root?: string | null;
}

export interface ExperimentFinishedParams {
  experiment: ExperimentPayload;
  verdict: Verdict;
  reason: string;
  /** kept, and now the best */
  newBest: boolean;
  /** the workspace folder (a path) */
  root?: string | null;
}

export interface ExperimentsParams {
  /** default 0 */
  offset?: number | null;
  /** default 100 */
  limit?: number | null;
  /** only experiments with this status */
  status?: ExperimentStatus | null;
  /** the workspace folder (a path or file URI); left out: the first one */
  root?: string | null;
}

export interface ExperimentsPage {
  /** experiments that match, over all pages */
  total: number;
  offset: number;
  experiments: ExperimentPayload[];
}

export interface ExperimentDiffParams {
  number: number;
  /** the workspace folder (a path or file URI); left out: the first one */
  root?: string | null;
}

/** One hunk of a file's change, as `nightlab.experiment.accept` numbers them. */
export interface HunkInfo {
  /** 0-based, in the order of the file's diff: accept's `hunks` takes these */
  index: number;
  /** 0-based line range [start, end) in the parent's text (start == end: an insertion) */
  parentStart: number;
  parentEnd: number;
  /** 0-based first line of the new lines in the experiment's text */
  experimentStart: number;
  experimentLines: number;
  /** "MATRIX_LR = 0.02 -> 0.04" or "+3 -1 lines" */
  summary: string;
}

export interface FileDiff {
  /** relative to the workspace root */
  path: string;
  /** the text at the parent commit; null when the experiment created the file */
  parent?: string | null;
  /** the text at the experiment's commit; null when it deleted the file */
  experiment?: string | null;
  hunks: HunkInfo[];
}

export interface ExperimentDiff {
  number: number;
  /** the parent commit */
  parent: string;
  commit: string;
  files: FileDiff[];
}

export interface ExperimentCurveParams {
  number: number;
  /** "run", "smoke" or "repeat-<k>": which of the experiment's runs */
  stage: string;
  /** the workspace folder (a path or file URI); left out: the first one */
  root?: string | null;
}

export interface CurvePoint {
  step: number;
  /** budgeted training time so far */
  elapsedS: number;
  loss: number;
}

export interface ExperimentCurve {
  number: number;
  stage: string;
  /** in order of step; empty when the run recorded no loss */
  points: CurvePoint[];
}

/** Settings for this run of the loop, over nightlab.toml; each left out keeps the file's value. */
export interface LoopStartOverrides {
  agent?: string | null;
  /** sets a time budget */
  budgetSeconds?: number | null;
  /** sets a token budget */
  budgetTokens?: number | null;
  maxExperiments?: number | null;
  tag?: string | null;
  /** keep/discard rule by name: "noise" or "strict" */
  policy?: string | null;
  /** stop once the agent has cost this much */
  maxCostUsd?: number | null;
  /** the Claude model, when the agent is anthropic */
  model?: string | null;
  /** "auto", a number, or a list of GPU ids ("0", "1") or "cpu"s */
  slots?: unknown | null;
  /** the user's HEAD moved on since the tag started: go on with its old lineage */
  continueLineage?: boolean | null;
  /** the loop's branch is <prefix>/<tag> ("autoresearch": autoresearch's naming) */
  branchPrefix?: string | null;
  /** where runs train: "local" (this machine) or "ray" (a Ray cluster) */
  executor?: string | null;
  /** the Ray cluster to join ("auto", "host:port"), with executor "ray" */
  rayAddress?: string | null;
  /** the workspace folder (a path or file URI); left out: the first one */
  root?: string | null;
}

export interface LoopArgs {
  /** the workspace folder (a path or file URI); left out: the first one */
  root?: string | null;
}

export interface LineageArgs {
  /** one of the workspace's [[lineage]] names */
  lineage: string;
  /** the workspace folder (a path or file URI); left out: the first one */
  root?: string | null;
}

export interface ExperimentArgs {
  number: number;
  /** the workspace folder (a path or file URI); left out: the first one */
  root?: string | null;
}

export interface AcceptArgs {
  number: number;
  /** only this file (relative to the workspace root); left out: every file */
  path?: string | null;
  /** 0-based indices among each file's hunks; left out: all of them */
  hunks?: number[] | null;
  /** the workspace folder (a path or file URI); left out: the first one */
  root?: string | null;
}

export interface LoopCommandResult {
  /** the state right after the command; `message` says what follows ("pausing ...") */
  state: LoopState;
  message: string;
  tag: string;
}

export interface AcceptResult {
  number: number;
  /** the files the editor changed */
  files: string[];
  /** hunks found already in the file, left alone */
  alreadyApplied: number[];
  /** left out, meeting the user's edits ("train.py: lines 40-44") */
  conflicts: string[];
  message: string;
}

export interface ExperimentCommandResult {
  number: number;
  message: string;
}

/** The params of each server -> client notification. */
export interface NotificationParams {
  "nightlab/loopState": LoopStatePayload;
  "nightlab/experimentStarted": ExperimentStartedParams;
  "nightlab/experimentProgress": ProgressPayload;
  "nightlab/experimentFinished": ExperimentFinishedParams;
}

/** The params and result of each client -> server request. */
export interface RequestTypes {
  "nightlab/experiments": { params: ExperimentsParams; result: ExperimentsPage };
  "nightlab/experimentDiff": { params: ExperimentDiffParams; result: ExperimentDiff };
  "nightlab/experimentCurve": { params: ExperimentCurveParams; result: ExperimentCurve };
}

/** The arguments (of workspace/executeCommand) and result of each command. */
export interface CommandTypes {
  "nightlab.loop.start": { args: [LoopStartOverrides?]; result: LoopCommandResult };
  "nightlab.loop.pause": { args: [LoopArgs?]; result: LoopCommandResult };
  "nightlab.loop.resume": { args: [LoopArgs?]; result: LoopCommandResult };
  "nightlab.loop.stop": { args: [LoopArgs?]; result: LoopCommandResult };
  "nightlab.loop.status": { args: [LoopArgs?]; result: LoopStatePayload };
  "nightlab.loop.lineage": { args: [LineageArgs]; result: LoopStatePayload };
  "nightlab.experiment.accept": { args: [AcceptArgs]; result: AcceptResult };
  "nightlab.experiment.applyBest": { args: [LoopArgs?]; result: AcceptResult };
  "nightlab.experiment.reject": { args: [ExperimentArgs]; result: ExperimentCommandResult };
  "nightlab.experiment.rerun": { args: [ExperimentArgs]; result: ExperimentCommandResult };
  "nightlab.experiment.showDiff": { args: [ExperimentArgs]; result: ExperimentDiff };
  "nightlab.baseline.measure": { args: [LoopArgs?]; result: LoopCommandResult };
}

// The loop's control endpoint: line-delimited JSON over .nightlab/<tag>/loop.sock (METHODS.md, last part).

export const CONTROL_VERSION = 1;
export const CONTROL_MAX_LINE = 1048576;

export type ControlCommandName = "pause" | "resume" | "stop" | "rerun" | "baseline" | "status" | "cancel";
export type ControlErrorCode = "malformed" | "tooLarge" | "unknownType" | "invalid" | "conflict" | "failed";
export type GoodbyeCode = "loopEnded" | "tooSlow" | "tooLarge";

/** The settings the loop runs with (nightlab.toml with the run's flags over it). */
export interface ControlSettings {
  /** "time" | "tokens" */
  budgetMode: string;
  /** seconds or tokens per experiment */
  budgetAmount: number;
  /** "60 s" or "1,000,000 tokens" */
  budget: string;
  /** "noise" | "strict" */
  policy: string;
  agent: string;
  /** the Claude model, when the agent is anthropic */
  model?: string | null;
  /** auto | required | off */
  sandbox: string;
  metricName: string;
  /** "lower" | "higher" is better */
  direction: string;
  /** the policy's runs of a baseline */
  baselineRepeats: number;
  /** 0: no limit */
  maxExperiments: number;
}

/** An experiment in flight: its record as the engine's events carry it, and its latest progress. */
export interface RunningExperiment {
  number: number;
  /** the ledger record (Experiment.to_json(), snake_case keys, as in events) */
  experiment: Record<string, unknown>;
  /** the last progress event's `progress`, none yet: null */
  progress?: Record<string, unknown> | null;
  /** that event's stage: "run", "smoke", "repeat-<k>" */
  stage?: string | null;
}

/** Where one loop process stands. */
export interface LoopSnapshot {
  pid: number;
  tag: string;
  /** the workspace folder (a path) */
  workspace: string;
  state: LoopState;
  reason: string;
  settings?: ControlSettings | null;
  running: RunningExperiment[];
  /** the loop's log file when detached (.nightlab/<tag>/loop.log) */
  log?: string | null;
  /** with the Ray executor: the cluster as the loop last saw it */
  cluster?: ClusterPayload | null;
}

/** The first line the server sends: the loop as it stands, then the last events, oldest first. */
export interface ControlHello {
  /** CONTROL_VERSION */
  protocol: number;
  loop: LoopSnapshot;
  /** engine events (protocol/events.py) */
  events: (Record<string, unknown>)[];
}

/** One engine event as it happens: a dict with "type" and the fields protocol/events.py lists. */
export interface ControlEvent {
  event: Record<string, unknown>;
}

/** Client -> loop: what to do. Each is answered by a reply or an error with the same id. */
export interface ControlCommand {
  /** a number or a string, echoed */
  id: unknown;
  command: ControlCommandName;
  /** rerun: the experiment to run again; cancel: the running one to stop */
  number?: number | null;
}

export interface ControlReply {
  id: unknown;
  command: ControlCommandName;
  /** the loop's state right after the command */
  state: LoopState;
  /** what follows ("pausing after the running experiment") */
  message: string;
  /** status: where the loop stands */
  loop?: LoopSnapshot | null;
}

export interface ControlErrorReply {
  /** the command's, when it could be read; else null */
  id: unknown;
  code: ControlErrorCode;
  message: string;
}

/** The server's last line before it closes the connection. */
export interface ControlGoodbye {
  code: GoodbyeCode;
  message: string;
  /** the loop's final state when it ended */
  state?: LoopState | null;
}

/** Each message on the control socket, by its `type`. */
export interface ControlMessages {
  "hello": ControlHello;
  "event": ControlEvent;
  "command": ControlCommand;
  "reply": ControlReply;
  "error": ControlErrorReply;
  "goodbye": ControlGoodbye;
}

/** One line on the control socket: its `type` and that message's fields. */
export type ControlMessage = {
  [K in keyof ControlMessages]: { type: K } & ControlMessages[K];
}[keyof ControlMessages];
