"""What ``hub demo`` prints for people: what to open, the credentials (shown once), and
example requests to try."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.table import Table


def render_summary(summary: dict[str, Any], console: Console) -> None:
    url = summary["url"]
    verb = "reused" if summary["reused"] else "built"
    console.print(
        f"\n[bold green]Demo coalition {verb}[/] in {summary['seconds']['total']:.1f} s "
        f"({summary['database']})"
    )
    console.print(_partners_table(summary))
    offer = summary["offer"]
    sizes = ", ".join(f"{k} {v:,}" for k, v in offer["audience_sizes"].items())
    console.print(f"Joint offer [bold]{offer['title']}[/] ({offer['status']}; audiences: {sizes})")
    console.print(f"Reward events recorded: {summary['reward_events']:,}")
    jobs = ", ".join(f"{j['name']} {j['status']}" for j in summary["jobs"])
    console.print(f"Jobs run once: {jobs}\n")
    console.print("[bold]Start the hub[/] (same configuration, e.g. the same HUB_* variables):")
    console.print("  hub serve", highlight=False)
    console.print(
        f"[bold]Open[/] {summary['console']} (admin console), {url}/schema (API reference)\n"
    )
    user = summary["console_user"]
    console.print("[bold]Admin console[/] sign-in:", highlight=False)
    console.print(f"  username {user['username']}", highlight=False)
    console.print(f"  password {user['password']}\n", highlight=False)
    console.print("[bold]Coalition admin client[/] (scope admin):", highlight=False)
    admin = summary["admin"]
    console.print(f"  client_id     {admin['client_id']}", highlight=False)
    console.print(f"  client_secret {admin['client_secret']}\n", highlight=False)
    console.print(_clients(summary), highlight=False, soft_wrap=True)
    console.print(_example(summary), highlight=False, soft_wrap=True)
    console.print(
        "[yellow]Secrets and the password are shown only now (the hub keeps slow hashes). "
        "Running `hub demo` again revokes these demo clients, disables this console account "
        "and prints new ones.[/]"
    )


def _partners_table(summary: dict[str, Any]) -> Table:
    table = Table(title="Partners")
    for column in ("partner", "id", "records"):
        table.add_column(column)
    for p in summary["partners"]:
        table.add_row(p["name"], p["id"], f"{p['records']:,}")
    return table


def _clients(summary: dict[str, Any]) -> str:
    width = max(len(p["name"]) for p in summary["partners"])
    lines = ["[bold]Partner clients[/] (every partner scope): name, client_id, client_secret"]
    lines += [
        f"  {p['name']:<{width}}  {p['client_id']}  {p['client_secret']}"
        for p in summary["partners"]
    ]
    return "\n".join(lines) + "\n"


def _example(summary: dict[str, Any]) -> str:
    url = summary["url"]
    airline = next(p for p in summary["partners"] if p["key"] == "airline")
    partnership = summary["partnerships"][0]["id"]
    offer_id = summary["offer"]["id"]
    return "\n".join(
        [
            "[bold]Try it[/] (as Skyway Airlines):",
            f"  TOKEN=$(curl -s -u '{airline['client_id']}:{airline['client_secret']}' \\",
            f"      -d grant_type=client_credentials {url}/oauth/token | jq -r .access_token)",
            '  curl -s -H "Authorization: Bearer $TOKEN" \\',
            f'      "{url}/v1/partnerships/{partnership}/overlap?purpose=analytics&by=self.tier"',
            f'  curl -s -H "Authorization: Bearer $TOKEN" "{url}/v1/offers/{offer_id}"',
            "",
        ]
    )
