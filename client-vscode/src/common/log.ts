/** The "Nightlab" Output channel: the extension's own log and the language server's. */
import * as vscode from "vscode";

let channel: vscode.LogOutputChannel | undefined;

export function logChannel(): vscode.LogOutputChannel {
  channel ??= vscode.window.createOutputChannel("Nightlab", { log: true });
  return channel;
}

export const log = {
  info: (message: string) => logChannel().info(message),
  warn: (message: string) => logChannel().warn(message),
  error: (message: string) => logChannel().error(message),
};
