// Parse a PowerShell file with tree-sitter-powershell and print its syntax tree as JSON:
// {type, named, missing, line, column, text, children} per node (line and column from 1).
// Used by tests/ps1/test_deploy_ps1.py: no PowerShell is installed on these machines.
import { readFileSync } from "node:fs";
import Parser from "tree-sitter";
import PowerShell from "tree-sitter-powershell";

const toJson = (node) => ({
  type: node.type,
  named: node.isNamed,
  missing: node.isMissing,
  line: node.startPosition.row + 1,
  column: node.startPosition.column + 1,
  text: node.text,
  children: node.children.map(toJson),
});

const parser = new Parser();
parser.setLanguage(PowerShell);
const tree = parser.parse(readFileSync(process.argv[2], "utf8"));
process.stdout.write(JSON.stringify(toJson(tree.rootNode)));
