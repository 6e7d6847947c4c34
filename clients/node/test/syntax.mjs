// Syntax check of the example files (they import next, @nestjs/* and rxjs, which are not
// installed here, so they are parsed, not type-checked). Exit 1 and one line per problem.
//   node test/syntax.mjs FILE...
import { readFileSync } from "node:fs";
import ts from "typescript";

let problems = 0;
for (const file of process.argv.slice(2)) {
  const out = ts.transpileModule(readFileSync(file, "utf8"), {
    fileName: file,
    reportDiagnostics: true,
    compilerOptions: { target: ts.ScriptTarget.ES2022, module: ts.ModuleKind.ESNext, experimentalDecorators: true },
  });
  for (const d of out.diagnostics ?? []) {
    const where = d.file && d.start !== undefined ? d.file.getLineAndCharacterOfPosition(d.start) : undefined;
    const at = where ? `${file}:${where.line + 1}:${where.character + 1}` : file;
    console.log(`${at}: ${ts.flattenDiagnosticMessageText(d.messageText, "\n")}`);
    problems += 1;
  }
}
process.exit(problems ? 1 : 0);
