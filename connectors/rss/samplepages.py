"""Real-looking news article pages around a known body, for tests, the extraction evaluation and the demo.

Each layout follows the markup of a family of real news sites (the structure, class names and
furniture, not their text): a WordPress news theme, a public broadcaster's block-based page, a
national daily with rich links and newsletter prompts inside the body, an Arc-style page with
"Advertisement" slots between paragraphs, a local-news CMS (BLOX) page, an AMP page, a wire
agency's CSS-module page, a magazine page with a pull quote and an inline "Read more" list, and a
small site's hand-rolled table layout (``<br><br>`` paragraphs, teasers with full sentences beside).
Around the body each has navigation, ads, share buttons, related and most-read links, and most a
comment thread: the text an extractor must leave out. :func:`page` returns the HTML; the body is
exactly the paragraphs given, so the true text of every page is known.

Special pages for the recognisers: :func:`paywall_page`, :func:`consent_page`, :func:`js_shell_page`.
"""

from __future__ import annotations

import html
import json
import random
from collections.abc import Callable, Sequence

HEADLINES = [
    "Council approves new budget after late-night session",
    "Storm warning issued for the coast as winds pick up",
    "Local team clinches title in dramatic final minutes",
    "Rail strike called off after talks make progress",
    "Hospital waiting lists fall for the third month running",
    "Scientists map the deepest part of the ocean floor",
    "Five things to know before the markets open today",
    "Museum returns artefacts to their country of origin",
    "Housing prices cool as interest rates stay high",
    "Opinion: why the city needs more night buses",
    "Watch: the moment a whale surfaced beside a ferry",
    "Election officials prepare for record early voting",
    "Tech firm cuts jobs as demand slows in Europe",
    "Drought forces farmers to sell cattle early",
    "Police appeal for witnesses after bridge collision",
    "The best books of the year, chosen by our critics",
    "Central bank holds rates and signals patience",
    "Airline cancels flights as staff shortages bite",
]
COMMENTS = [
    "This is exactly what I have been saying for years, nobody listens until it is too late.",
    "Can anyone explain why the figures in the third paragraph do not add up?",
    "Great reporting as always. Thanks for covering this properly.",
    "I live two streets away and nobody told us anything about it until this morning.",
    "Same story every year, different names. Nothing will change.",
    "The comments section is the best part of this site, honestly.",
    "Where is the evidence for this? I would like to see the source documents.",
]
NAV = [
    "Home",
    "News",
    "World",
    "Business",
    "Politics",
    "Tech",
    "Science",
    "Health",
    "Sport",
    "Culture",
    "Opinion",
]
NAV += ["Travel", "Video", "Podcasts", "Newsletters"]

Layout = Callable[[Sequence[str], str, str, str, random.Random], str]


def _e(text: str) -> str:
    return html.escape(text, quote=True)


def _nav(rng: random.Random, cls: str = "site-nav") -> str:
    links = "".join(f'<li><a href="/{n.lower()}">{n}</a></li>' for n in NAV)
    return f'<nav class="{cls}" aria-label="Main"><ul>{links}</ul></nav>'


def _links(rng: random.Random, n: int, cls: str = "related") -> str:
    picked = rng.sample(HEADLINES, n)
    return "".join(
        f'<li class="{cls}__item"><a href="/news/{i}-{rng.randrange(10**6)}">{_e(h)}</a></li>'
        for i, h in enumerate(picked)
    )


def _comments(rng: random.Random, n: int) -> str:
    picked = rng.sample(COMMENTS, n)
    return "".join(
        f'<li class="comment"><div class="comment-author">reader{rng.randrange(999)}</div>'
        f'<div class="comment-body"><p>{_e(c)}</p></div><a class="reply" href="#">Reply</a></li>'
        for c in picked
    )


def _ld(title: str, author: str, date: str, free: bool = True) -> str:
    data: dict[str, object] = {
        "@context": "https://schema.org",
        "@type": "NewsArticle",
        "headline": title,
        "datePublished": date,
        "author": {"@type": "Person", "name": author},
    }
    if not free:
        data["isAccessibleForFree"] = False
    return f'<script type="application/ld+json">{json.dumps(data)}</script>'


def _head(title: str, author: str, date: str, site: str, extra: str = "") -> str:
    return (
        f'<head><meta charset="utf-8"><title>{_e(title)} | {site}</title>'
        f'<meta name="viewport" content="width=device-width, initial-scale=1">'
        f'<meta property="og:title" content="{_e(title)}"><meta property="og:type" content="article">'
        f'<meta name="author" content="{_e(author)}"><meta property="article:published_time" content="{date}">'
        f'<link rel="stylesheet" href="/assets/site.css"><script src="/assets/analytics.js" async></script>'
        f"<script>window.dataLayer=window.dataLayer||[];dataLayer.push({{'page':'article'}});</script>{extra}</head>"
    )


def wordpress(paragraphs: Sequence[str], title: str, author: str, date: str, rng: random.Random) -> str:
    body = ""
    for i, p in enumerate(paragraphs):
        body += f"<p>{_e(p)}</p>"
        if i == 1:
            body += '<div class="code-block code-block-2"><div class="adsbygoogle">Advertisement</div></div>'
        if i == 2:
            body += (
                '<figure class="wp-block-embed is-type-rich is-provider-twitter"><div class="wp-block-embed__wrapper">'
                '<blockquote class="twitter-tweet"><p lang="en" dir="ltr">Huge turnout at the meeting tonight, the room '
                "was packed and people were queueing outside in the rain</p>&mdash; Local Resident (@valley_res) "
                '<a href="https://twitter.com/x/status/1">March 3, 2026</a></blockquote></div></figure>'
            )
        if i == 3:
            body += (
                '<div class="jp-relatedposts"><h3 class="jp-relatedposts-headline"><em>Related</em></h3>'
                f"<ul>{_links(rng, 3, 'jp-relatedposts-post')}</ul></div>"
            )
    return (
        f'<!DOCTYPE html><html lang="en-US">{_head(title, author, date, "The Valley Post")}'
        '<body class="post-template-default single single-post">'
        f'<header id="masthead" class="site-header"><div class="site-branding"><a href="/">The Valley Post</a></div>{_nav(rng, "main-navigation")}</header>'
        '<div id="content" class="site-content"><div id="primary" class="content-area"><main id="main" class="site-main">'
        '<article class="post type-post status-publish format-standard hentry">'
        f'<header class="entry-header"><h1 class="entry-title">{_e(title)}</h1>'
        f'<div class="entry-meta"><span class="byline">By <a class="url fn n" href="/author/x">{_e(author)}</a></span>'
        f'<time class="entry-date published" datetime="{date}">{date[:10]}</time></div></header>'
        f'<div class="entry-content">{body}</div>'
        '<footer class="entry-footer"><span class="cat-links">Posted in <a href="/news">News</a></span>'
        '<span class="tags-links">Tagged <a href="/tag/local">local</a></span>'
        '<div class="sharedaddy"><h3>Share this:</h3><ul><li><a href="#">Facebook</a></li><li><a href="#">X</a></li></ul></div></footer>'
        f'<div class="author-info"><h2>About {_e(author)}</h2><p>{_e(author)} covers the valley for The Valley Post.</p></div>'
        "</article>"
        f'<div id="comments" class="comments-area"><h2 class="comments-title">3 thoughts on “{_e(title)}”</h2>'
        f'<ol class="comment-list">{_comments(rng, 3)}</ol>'
        '<div id="respond"><h3>Leave a Reply</h3><form><textarea name="comment"></textarea><input type="submit" value="Post Comment"></form></div></div>'
        "</main></div>"
        '<aside id="secondary" class="widget-area"><section class="widget"><h2 class="widget-title">Popular</h2>'
        f"<ul>{_links(rng, 5, 'popular')}</ul></section></aside></div>"
        '<footer id="colophon" class="site-footer"><p>© 2026 The Valley Post. All rights reserved.</p>'
        '<a href="/privacy">Privacy Policy</a> <a href="/terms">Terms</a></footer></body></html>'
    )


def broadcaster(paragraphs: Sequence[str], title: str, author: str, date: str, rng: random.Random) -> str:
    blocks = "".join(
        f'<div data-component="text-block" class="ssrcss-11r1m41-RichTextComponentWrapper"><div class="ssrcss-7uxr49-RichTextContainer"><p class="ssrcss-1q0x1qg-Paragraph">{_e(p)}</p></div></div>'
        + (
            '<figure class="ssrcss-1p3ddd-StyledFigure"><img src="/img/1.jpg" alt="A street scene">'
            '<figcaption class="ssrcss-1xnmua2-Caption">Image caption, Residents gathered on Tuesday</figcaption></figure>'
            if i == 0
            else '<div data-component="text-block"><p><b>Read more:</b> <a href="/news/rm">'
            + _e(rng.choice(HEADLINES))
            + "</a></p></div>"
            if i == 2
            else ""
        )
        for i, p in enumerate(paragraphs)
    )
    return (
        f'<!DOCTYPE html><html lang="en-GB" class="no-js">{_head(title, author, date, "National Broadcaster News", _ld(title, author, date))}'
        f'<body><a href="#main-content" class="skip">Skip to content</a><header class="ssrcss-header">{_nav(rng)}'
        '<div class="ssrcss-search"><form><input placeholder="Search news"></form></div></header>'
        '<main id="main-content" class="ssrcss-main"><article class="ssrcss-pv1rh6-ArticleWrapper">'
        f'<header data-component="headline-block"><h1 id="main-heading" class="ssrcss-15xko80-StyledHeading">{_e(title)}</h1></header>'
        f'<div data-component="byline-block"><div class="ssrcss-68pt20-Text">By {_e(author)}</div><div>Political reporter</div></div>'
        f'<time data-testid="timestamp" datetime="{date}">4 hours ago</time>'
        '<div data-component="links-block"><ul><li><a href="#">Share</a></li><li><a href="#">Save</a></li></ul></div>'
        f"{blocks}"
        '<div data-component="tag-list"><h2>Related Topics</h2><ul><li><a href="/topics/a">Economy</a></li><li><a href="/topics/b">Transport</a></li></ul></div>'
        f'<section data-component="see-alsos"><h2>More on this story</h2><ul>{_links(rng, 3)}</ul></section>'
        "</article>"
        f'<section class="ssrcss-most-read"><h2>Most read</h2><ol>{_links(rng, 5, "most-read")}</ol></section></main>'
        '<footer class="ssrcss-footer"><p>Copyright © 2026. We are not responsible for the content of external sites.</p></footer></body></html>'
    )


def daily(paragraphs: Sequence[str], title: str, author: str, date: str, rng: random.Random) -> str:
    body = ""
    for i, p in enumerate(paragraphs):
        body += f'<p class="dcr-iy9ec7">{_e(p)}</p>'
        if i == 0:
            link = rng.choice(HEADLINES)
            body += f'<aside class="element element-rich-link"><a href="/news/rich">Read more<span class="rich-link__title">{_e(link)}</span></a></aside>'
        if i == 1:
            body += (
                '<figure class="element element-image" data-media-id="a1"><img src="/img/3.jpg" alt="">'
                '<figcaption><span class="caption">Volunteers sorting donations at the community hall on '
                "Monday evening.</span> Photograph: Alex Smith/The Daily</figcaption></figure>"
            )
        if i == 2:
            body += (
                '<figure class="element element-newsletter" data-spacefinder-role="inline"><div class="newsletter">'
                "<p>Sign up to First Edition, our free daily newsletter – every weekday morning at 7am</p>"
                "<p>Privacy Notice: Newsletters may contain info about charities, online ads, and content funded by outside parties.</p>"
                "<button>Sign up</button></div></figure>"
            )
    return (
        f'<!DOCTYPE html><html lang="en">{_head(title, author, date, "The Daily", _ld(title, author, date))}'
        f'<body><div id="bannerandheader"><header class="dcr-header">{_nav(rng, "pillars")}</header></div>'
        '<main data-layout="StandardLayout"><div class="dcr-article">'
        '<div data-gu-name="title"><span class="dcr-kicker">Transport</span>'
        f'<h1 class="dcr-headline">{_e(title)}</h1></div>'
        f'<div data-gu-name="standfirst"><p>{_e(paragraphs[0][:90])}…</p></div>'
        f'<div data-gu-name="meta"><address aria-label="Contributor info"><a rel="author" href="/profile/x">{_e(author)}</a></address>'
        f"<details><summary>{date[:10]}</summary><span>Last modified on {date[:10]}</span></details></div>"
        f'<div data-gu-name="body"><div id="maincontent"><div class="article-body-commercial-selector article-body-viewer-selector dcr-1n44qn1">{body}</div></div></div>'
        '<div class="submeta"><span>Explore more on these topics</span><ul><li><a href="#">Transport</a></li><li><a href="#">UK news</a></li></ul>'
        '<a href="#">Share</a><a href="#">Reuse this content</a></div>'
        "</div>"
        f'<section id="comments" data-component="discussion"><h2>Comments (171)</h2><ul>{_comments(rng, 4)}</ul></section>'
        f'<section data-component="most-popular"><h2>Most viewed</h2><ol>{_links(rng, 6, "most-viewed")}</ol></section></main>'
        '<footer><ul><li><a href="#">About us</a></li><li><a href="#">Contact us</a></li><li><a href="#">Complaints &amp; corrections</a></li></ul>'
        "<p>© 2026 The Daily News &amp; Media Limited or its affiliated companies. All rights reserved.</p></footer></body></html>"
    )


def arc(paragraphs: Sequence[str], title: str, author: str, date: str, rng: random.Random) -> str:
    body = ""
    for i, p in enumerate(paragraphs):
        body += (
            f'<p class="font--body font-copy gray-darkest ma-0 pb-md" data-el="text" dir="null">{_e(p)}</p>'
        )
        if i % 3 == 2:
            body += '<div class="dn-ns"><div class="ad-slot"><span class="ad-label">Advertisement</span><div id="slug_inline_bb_1"></div></div></div>'
        if i == 3:
            body += '<div class="hide-for-print"><p>Story continues below advertisement</p></div>'
        if i == 1:
            body += (
                '<div class="inline-related"><h4>Related</h4><a href="/news/r1">'
                f"<span>{_e(rng.choice(HEADLINES))}</span></a>"
                "<p>What the decision means for commuters, in five charts.</p></div>"
            )
    return (
        f'<!DOCTYPE html><html lang="en">{_head(title, author, date, "The Capital Ledger", _ld(title, author, date))}'
        f'<body><div id="__next"><header class="site-header">{_nav(rng)}<a class="subscribe-button" href="/subscribe">Subscribe</a><a href="/login">Sign in</a></header>'
        "<main><article>"
        '<div class="headline-kicker">Politics</div>'
        f'<h1 data-qa="headline" class="headline">{_e(title)}</h1>'
        f'<div data-qa="author-byline"><span>By </span><a data-qa="author-name" href="/people/x">{_e(author)}</a></div>'
        f'<div data-qa="timestamp"><span>{date[:10]} at 6:00 a.m. EST</span></div>'
        '<div class="share-bar"><button>Gift Article</button><button>Share</button><button>Comment</button></div>'
        f'<div class="article-body grid-center grid-body">{body}</div>'
        '<div class="interstitial-link"><a href="/newsletters">Sign up for The Morning newsletter</a></div>'
        "</article>"
        f'<aside class="most-read"><h2>Most Read Politics</h2><ul>{_links(rng, 5, "mr")}</ul></aside>'
        '<div class="subscription-promo"><p>Get unlimited access to the Ledger for $1 every 4 weeks.</p><a href="/subscribe">Get this offer</a></div>'
        "</main>"
        "<footer><div>Company</div><ul><li>About The Ledger</li><li>Careers</li></ul><p>© 1996-2026 The Capital Ledger</p></footer></div></body></html>"
    )


def blox(paragraphs: Sequence[str], title: str, author: str, date: str, rng: random.Random) -> str:
    body = ""
    for i, p in enumerate(paragraphs):
        body += f"<p>{_e(p)}</p>"
        if i == 1:
            body += '<div class="tnt-ads-container hidden-print"><div class="tnt-ads" id="tncms-region-article_instory_top"></div></div>'
    body += (
        f'<div class="author-bio"><p><em>{_e(author)} covers county government for the Herald. '
        "Reach her at 555-0100 or follow her on social media.</em></p></div>"
    )
    return (
        f'<!DOCTYPE html><html lang="en">{_head(title, author, date, "County Herald")}'
        '<body class="asset-type-article"><div id="site-container">'
        f'<header id="site-header"><div class="navbar">{_nav(rng, "nav navbar-nav")}</div>'
        '<div class="weather-widget"><span>62°</span><span>Partly cloudy</span></div></header>'
        '<div id="main-page-container"><div class="container"><div class="row"><div class="col-md-8">'
        '<article itemscope itemtype="http://schema.org/NewsArticle">'
        '<header class="asset-header"><div class="asset-kicker">Local News</div>'
        f'<h1 class="headline" itemprop="headline"><span class="tnt-headline">{_e(title)}</span></h1>'
        f'<ul class="list-inline"><li><span class="tnt-byline">By {_e(author)}</span></li>'
        f'<li><time datetime="{date}" class="tnt-date">{date[:10]}</time></li></ul></header>'
        '<div class="share-container"><a href="#">Facebook</a><a href="#">Twitter</a><a href="#">Email</a><a href="#">Print</a></div>'
        f'<div class="asset-content subscriber-premium" id="article-body" itemprop="articleBody">{body}</div>'
        '<div class="asset-tags"><span>Tags</span><a href="#">County</a><a href="#">Schools</a></div>'
        '<div id="comments" class="comments-disabled"><p>Comments are closed on this article.</p></div>'
        "</article></div>"
        f'<div class="col-md-4"><div class="tnt-block"><h3>Trending</h3><ol>{_links(rng, 5, "trending")}</ol></div>'
        '<div class="tnt-ads" id="tncms-region-sidebar"></div></div></div></div></div>'
        '<footer id="site-footer"><address>County Herald, 100 Main St</address><p>© 2026 County Herald</p></footer></div></body></html>'
    )


def amp(paragraphs: Sequence[str], title: str, author: str, date: str, rng: random.Random) -> str:
    body = ""
    for i, p in enumerate(paragraphs):
        body += f"<p>{_e(p)}</p>"
        if i == 1:
            body += '<amp-ad width="300" height="250" type="doubleclick" data-slot="/1/amp"><div fallback>Advertisement</div></amp-ad>'
    return (
        f'<!doctype html><html ⚡ lang="en">{_head(title, author, date, "Metro Now", _ld(title, author, date))}'
        '<body><amp-sidebar id="sidebar" layout="nodisplay">' + _nav(rng) + "</amp-sidebar>"
        '<header class="amp-header"><button on="tap:sidebar.toggle">Menu</button><a href="/">Metro Now</a></header>'
        '<main class="amp-article"><article>'
        f'<h1 class="amp-title">{_e(title)}</h1><div class="amp-byline">{_e(author)} · {date[:10]}</div>'
        '<amp-img src="/img/2.jpg" width="800" height="450" layout="responsive" alt="photo"></amp-img>'
        f'<div class="amp-article-body">{body}</div>'
        '<amp-social-share type="facebook"></amp-social-share><amp-social-share type="twitter"></amp-social-share>'
        f'<div class="amp-related"><h2>Read next</h2><ul>{_links(rng, 4)}</ul></div>'
        "</article></main><footer>© Metro Now 2026</footer></body></html>"
    )


def wire(paragraphs: Sequence[str], title: str, author: str, date: str, rng: random.Random) -> str:
    body = "".join(
        f'<div data-testid="paragraph-{i}" class="article-body__paragraph__2-BtD text__text__1FZLe text__dark-grey__3Ml43 text__regular__2N1Xr body__full_width__ekUdw">{_e(p)}</div>'
        for i, p in enumerate(paragraphs)
    )
    return (
        f'<!DOCTYPE html><html lang="en">{_head(title, author, date, "Wire Agency", _ld(title, author, date))}'
        f'<body><div id="fusion-app"><header class="site-header__header__1Jkk0">{_nav(rng)}</header>'
        '<main id="main-content" class="regular-article-layout__main__1tK5g">'
        '<article class="article__container__2-5pJ"><div class="article-header__heading__15OpQ">'
        '<nav aria-label="Tags"><a href="/world/">World</a></nav>'
        f'<h1 data-testid="Heading" class="text__heading_3__1kDhc">{_e(title)}</h1>'
        f'<div class="article-header__dateline-container__3hNsS"><time datetime="{date}">{date[:10]}</time></div></div>'
        f'<div class="article-body__container__3ypuX">{body}'
        f'<p class="sign-off">Reporting by {_e(author)}; Editing by Tom Hogue</p>'
        '<p class="trust-badge"><a href="/principles">Our Standards: The Trust Principles.</a></p></div>'
        f'<div class="read-next"><h2>Read Next</h2><ul>{_links(rng, 4, "read-next")}</ul></div>'
        "</article></main>"
        "<footer><p>All quotes delayed a minimum of 15 minutes.</p><p>© 2026 Wire Agency. All rights reserved</p></footer></div></body></html>"
    )


def magazine(paragraphs: Sequence[str], title: str, author: str, date: str, rng: random.Random) -> str:
    body = ""
    for i, p in enumerate(paragraphs):
        body += f'<p class="body-paragraph">{_e(p)}</p>'
        if i == 1:
            quote = paragraphs[0].split(". ")[0].rstrip(".")
            body += f'<aside class="pullquote" aria-hidden="true"><blockquote><p>“{_e(quote)}”</p></blockquote></aside>'
        if i == 2 and len(paragraphs) > 4:
            body += f'<div class="inline-list"><h4>Read more</h4><ul>{_links(rng, 3, "inline")}</ul></div>'
    return (
        f'<!DOCTYPE html><html lang="en">{_head(title, author, date, "The Monthly")}'
        f'<body><div class="page"><header class="global-header">{_nav(rng)}<div class="promo-bar">Subscribe for $2 a week</div></header>'
        '<div class="article-page"><div class="rubric">Ideas</div>'
        f'<h1 class="article-title">{_e(title)}</h1><p class="dek">A longer look at the week’s story.</p>'
        f'<p class="byline">By <span class="author-name">{_e(author)}</span></p>'
        f'<section class="article-body" itemprop="articleBody">{body}</section>'
        '<div class="article-footer"><p>This article appears in the March 2026 print edition.</p></div>'
        f'<div class="recirc"><h3>Recommended Reading</h3><ul>{_links(rng, 4, "recirc")}</ul></div>'
        f'<div class="comments"><ul>{_comments(rng, 2)}</ul></div></div>'
        "<footer><p>© 2026 The Monthly Group. All rights reserved.</p></footer></div></body></html>"
    )


def legacy(paragraphs: Sequence[str], title: str, author: str, date: str, rng: random.Random) -> str:
    """A hand-rolled table layout of a small site: <br><br> paragraphs, teasers with full sentences beside."""
    body = "<br><br>\n".join(_e(p) for p in paragraphs)
    teasers = "".join(
        f'<p class="teaser"><a href="/story{i}.htm"><b>{_e(h)}</b></a><br>'
        f"{_e(rng.choice(COMMENTS))} Full story inside.</p>"
        for i, h in enumerate(rng.sample(HEADLINES, 4))
    )
    return (
        f'<html lang="en">{_head(title, author, date, "Hill County Courier")}'
        '<body bgcolor="#ffffff"><table width="100%" cellpadding="4"><tr><td colspan="2" class="masthead">'
        '<img src="/logo.gif" alt="Hill County Courier"><br><a href="/">Home</a> | <a href="/news.htm">News</a> | '
        '<a href="/sports.htm">Sports</a> | <a href="/obits.htm">Obituaries</a> | <a href="/classifieds.htm">Classifieds</a></td></tr>'
        f'<tr><td width="70%" valign="top"><font face="Arial" size="5"><b>{_e(title)}</b></font><br>'
        f'<font size="2"><i>By {_e(author)}, Courier staff writer</i> - {date[:10]}</font><br><br>'
        f'<font face="Georgia" size="3">{body}</font><br><br>'
        '<font size="1">Copyright 2026 Hill County Courier. This material may not be republished without permission.</font></td>'
        f'<td width="30%" valign="top" bgcolor="#eeeeee"><b>Other stories</b>{teasers}'
        '<p><a href="/subscribe.htm">Subscribe to the print edition</a></p></td></tr></table></body></html>'
    )


LAYOUTS: dict[str, Layout] = {
    "wordpress": wordpress,
    "broadcaster": broadcaster,
    "daily": daily,
    "arc": arc,
    "blox": blox,
    "amp": amp,
    "wire": wire,
    "magazine": magazine,
    "legacy": legacy,
}


def page(
    layout: str,
    paragraphs: Sequence[str],
    title: str = "Valley reservoirs refill after months of drought",
    author: str = "Jane Roe",
    date: str = "2026-03-04T10:15:00Z",
    seed: int = 0,
) -> str:
    """The HTML of an article page in ``layout`` whose body is exactly ``paragraphs``."""
    return LAYOUTS[layout](paragraphs, title, author, date, random.Random(seed))


def paywall_page(teaser: Sequence[str], title: str = "Inside the budget deal") -> str:
    """A metered page: JSON-LD says it is not free, the body is a teaser and a subscription prompt."""
    body = "".join(f"<p>{_e(p)}</p>" for p in teaser)
    return (
        f'<!DOCTYPE html><html lang="en">{_head(title, "Staff", "2026-03-04T10:15:00Z", "The Ledger", _ld(title, "Staff", "2026-03-04T10:15:00Z", free=False))}'
        f'<body><article><h1>{_e(title)}</h1><div class="article-body">{body}</div>'
        '<div class="paywall-prompt"><h2>Subscribe to continue reading</h2><p>Already a subscriber? <a href="/login">Log in</a></p></div>'
        "</article></body></html>"
    )


def consent_page() -> str:
    """A cookie consent interstitial that stands where the article should be."""
    return (
        '<!DOCTYPE html><html lang="en"><head><title>Before you continue</title></head><body>'
        '<div class="consent-dialog"><h1>We value your privacy</h1>'
        "<p>We and our partners use cookies and similar technologies to store and access information on your "
        "device, to measure audiences and to personalise ads and content. By clicking Accept all you consent "
        "to the use of cookies. You can manage your preferences at any time in your privacy choices.</p>"
        "<button>Accept all</button><button>Reject all</button><a href='/prefs'>Manage preferences</a></div>"
        "</body></html>"
    )


def js_shell_page() -> str:
    """A single-page app shell: nothing but scripts until the browser runs them."""
    return (
        '<!DOCTYPE html><html lang="en"><head><title>News</title><script src="/static/js/main.8f3a.js" defer></script>'
        "</head><body><noscript>You need to enable JavaScript to run this app.</noscript>"
        '<div id="root"></div><script>window.__INITIAL_STATE__={"route":"/article/1"}</script></body></html>'
    )
