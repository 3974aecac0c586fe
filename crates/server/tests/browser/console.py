"""Drives the web console in headless Chromium (Selenium + chromedriver), as a person would.

Called by crates/server/tests/browser.rs with the console URL and the accounts to use; prints
one line per step and exits non-zero at the first failure. Screenshots of the main pages go to
--shots when given (the README shows them).
"""

import argparse
import sys
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as EC
from selenium.webdriver.support.ui import WebDriverWait

p = argparse.ArgumentParser()
p.add_argument("--url", required=True)
p.add_argument("--admin-email", required=True)
p.add_argument("--admin-password", required=True)
p.add_argument("--provider", required=True, help="name of a provider to turn off")
p.add_argument("--request-id", default="", help="a request to find on the usage page")
p.add_argument("--shots", default="")
p.add_argument("--chromedriver", default="/usr/bin/chromedriver")
args = p.parse_args()

opts = webdriver.ChromeOptions()
for a in ["--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
          "--window-size=1366,900", "--no-first-run", "--disable-extensions"]:
    opts.add_argument(a)
driver = webdriver.Chrome(service=Service(args.chromedriver), options=opts)
driver.set_page_load_timeout(30)
step_no = 0


def step(msg):
    global step_no
    step_no += 1
    print(f"[{step_no}] {msg}", flush=True)


def fail(msg):
    print(f"FAIL: {msg}\nURL: {driver.current_url}\n{driver.page_source[:3000]}", flush=True)
    driver.quit()
    sys.exit(1)


def go(path):
    driver.get(args.url + path)


def body():
    return driver.page_source


def shot(name):
    if args.shots:
        driver.save_screenshot(f"{args.shots}/{name}.png")


def submit(button):
    """Clicks a submit button and waits for the page it leads to."""
    old = driver.find_element(By.TAG_NAME, "html")
    button.click()
    WebDriverWait(driver, 15).until(EC.staleness_of(old))


def login(email, password):
    go("/login")
    driver.find_element(By.NAME, "email").send_keys(email)
    driver.find_element(By.NAME, "password").send_keys(password)
    submit(driver.find_element(By.CSS_SELECTOR, "button[type=submit]"))


def rendered_ok():
    src = body()
    return "could not be rendered" not in src and "<h1>" in src


try:
    step("the console asks for a sign-in")
    go("/admin")
    if "/login" not in driver.current_url:
        fail("an anonymous visitor was not sent to the sign-in page")
    shot("login")

    step("a wrong password is refused with a message")
    login(args.admin_email, "not-the-password")
    if "/login" not in driver.current_url or "alert" not in body():
        fail("a wrong password did not show an error")

    step("the admin signs in and lands on the dashboard")
    login(args.admin_email, args.admin_password)
    if not driver.current_url.rstrip("/").endswith("/admin"):
        fail("after sign-in the admin is not on /admin")
    if not rendered_ok():
        fail("the dashboard did not render")
    shot("admin-dashboard")

    step("every page in the navigation renders")
    links = [a.get_attribute("href") for a in driver.find_elements(By.CSS_SELECTOR, "nav.side a")]
    if len(links) < 4:
        fail(f"the navigation has too few entries: {links}")
    for href in links:
        driver.get(href)
        if not rendered_ok():
            fail(f"{href} did not render")
        name = href.rstrip("/").rsplit("/", 1)[-1] or "home"
        if "/admin/" in href:
            shot(f"admin-{name}")
    print(f"    {len(links)} pages", flush=True)

    step("the admin creates a user in the drawer form")
    go("/admin/users")
    driver.find_element(By.CSS_SELECTOR, "details.drawer > summary").click()
    form = driver.find_element(By.CSS_SELECTOR, "details.drawer form")
    form.find_element(By.NAME, "email").send_keys("browser-user@example.com")
    form.find_element(By.NAME, "password").send_keys("browser-password-1")
    form.find_element(By.NAME, "quota_usd").send_keys("not money")
    submit(form.find_element(By.CSS_SELECTOR, "button[type=submit]"))
    if "field-error" not in body():
        fail("an invalid quota did not show an inline error")
    form = driver.find_element(By.CSS_SELECTOR, "details.drawer form")
    form.find_element(By.NAME, "email").clear()
    form.find_element(By.NAME, "email").send_keys("browser-user@example.com")
    form.find_element(By.NAME, "password").send_keys("browser-password-1")
    q = form.find_element(By.NAME, "quota_usd")
    q.clear()
    q.send_keys("25")
    submit(form.find_element(By.CSS_SELECTOR, "button[type=submit]"))
    if "browser-user@example.com" not in body():
        fail("the new user is not in the list")
    shot("admin-users")

    if args.request_id:
        step("the request made through the gateway is on the usage page, with its cost and trace")
        go(f"/admin/usage/{args.request_id}")
        src = body()
        if not rendered_ok() or args.request_id not in src:
            fail("the request detail page did not show the request")
        for must in ["Cost", "trace"]:
            if must.lower() not in src.lower():
                fail(f"the request detail has no {must}")
        shot("admin-usage-detail")

    step("the admin creates a provider in the drawer form")
    go("/admin/providers")
    driver.find_element(By.CSS_SELECTOR, "details.drawer > summary").click()
    form = driver.find_element(By.CSS_SELECTOR, "details.drawer form")
    form.find_element(By.NAME, "name").send_keys("browser-made")
    form.find_element(By.NAME, "provider_priority").send_keys("five")
    submit(form.find_element(By.CSS_SELECTOR, "button[type=submit]"))
    if "field-error" not in body():
        fail("a bad priority did not show an inline error")
    form = driver.find_element(By.CSS_SELECTOR, "details.drawer form")
    form.find_element(By.NAME, "name").send_keys("browser-made")
    form.find_element(By.NAME, "display_name").send_keys("Made in the browser")
    form.find_element(By.NAME, "provider_priority").send_keys("5")
    submit(form.find_element(By.CSS_SELECTOR, "button[type=submit]"))
    if not driver.find_elements(By.CSS_SELECTOR, "tr[data-provider='browser-made']"):
        fail("the new provider is not in the list")

    step("the admin turns a provider off")
    go("/admin/providers")
    row = driver.find_element(By.CSS_SELECTOR, f"tr[data-provider='{args.provider}']")
    submit(row.find_element(By.CSS_SELECTOR, "form button[type=submit]"))
    row = driver.find_element(By.CSS_SELECTOR, f"tr[data-provider='{args.provider}']")
    if "off" not in row.text:
        fail("the provider still shows as active")

    step("sign out, then a normal user cannot open admin pages")
    submit(driver.find_element(By.CSS_SELECTOR, "form[action='/logout'] button"))
    login("browser-user@example.com", "browser-password-1")
    if driver.current_url.rstrip("/") != args.url.rstrip("/"):
        fail("a user did not land on their dashboard")
    shot("user-dashboard")
    for path in ["/admin", "/admin/users", "/admin/providers"]:
        go(path)
        if "for administrators" not in body():
            fail(f"a normal user could open {path}")
    links = [a.get_attribute("href") for a in driver.find_elements(By.CSS_SELECTOR, "nav.side a")]
    if any("/admin" in h for h in links):
        fail("a normal user sees admin navigation")

    step("the user creates a key and sees it once")
    go("/keys")
    driver.find_element(By.NAME, "name").send_keys("browser")
    submit(driver.find_element(By.CSS_SELECTOR, "form.inline button[type=submit]"))
    secret = driver.find_element(By.CSS_SELECTOR, "code.secret").text
    if not secret.startswith("sk-"):
        fail("no key shown after creation")
    go("/keys")
    if secret in body():
        fail("the full key is shown again")
    shot("user-keys")
    print("OK", flush=True)
finally:
    try:
        driver.quit()
    except Exception:  # noqa: BLE001 - the browser may already be gone
        pass
