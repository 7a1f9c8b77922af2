"""The HTML skeleton every report shares: styles that read at 1280 px and at phone width, a few
lines of plain JavaScript for filtering and sorting, and no network access of any kind."""

from __future__ import annotations

from html import escape

CSS = """
:root{--fg:#1b1b1b;--muted:#555;--line:#d0d0d0;--bg:#fff;--card:#f6f7f9;--bad:#a4000f}
*{box-sizing:border-box}
body{margin:0;font:15px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,"DejaVu Sans",sans-serif;
color:var(--fg);background:var(--bg)}
main{max-width:1400px;margin:0 auto;padding:16px}
h1{font-size:1.45rem;margin:.2em 0 .3em}h2{font-size:1.2rem;margin:1.2em 0 .4em}
h3{font-size:1rem;margin:.2em 0}
.meta{color:var(--muted);font-size:.9rem;overflow-wrap:anywhere}
.controls{display:flex;flex-wrap:wrap;gap:8px 18px;align-items:center;padding:10px 12px;
background:var(--card);border:1px solid var(--line);border-radius:6px;margin:10px 0;
position:sticky;top:0;z-index:2}
.controls label{font-weight:600}.controls fieldset{border:0;margin:0;padding:0;display:flex;
flex-wrap:wrap;gap:4px 10px}.controls legend{font-weight:600;float:left;margin-right:6px}
select,button{font:inherit;padding:2px 6px}
.count{margin-left:auto;font-variant-numeric:tabular-nums}
.row{border-top:1px solid var(--line);padding:12px 0;display:grid;
grid-template-columns:minmax(170px,230px) 1fr;gap:12px}
.info{font-size:.9rem}.info img{width:100%;max-width:220px}
.cells{display:grid;grid-template-columns:repeat(auto-fill,minmax(180px,1fr));gap:10px;
align-content:start}
figure{margin:0;background:var(--card);border:1px solid var(--line);border-radius:6px;
padding:6px;min-width:0}
figure img,.info img{display:block;height:auto;image-rendering:pixelated;
border-radius:3px;background:#ddd}
figure img{width:100%}
figcaption{font-size:.82rem;overflow-wrap:anywhere}
figcaption .method{font-weight:700;font-size:.92rem}
.error{color:var(--bad);font-weight:600;overflow-wrap:anywhere}
.noimg{display:flex;align-items:center;justify-content:center;min-height:80px;
color:var(--muted);font-size:.85rem;text-align:center;border:1px dashed var(--line)}
table{border-collapse:collapse;font-size:.88rem;font-variant-numeric:tabular-nums}
th,td{padding:3px 8px;border-bottom:1px solid var(--line);text-align:right;vertical-align:top}
th:first-child,td:first-child{text-align:left}
table.top{width:100%}table.top td,table.top th{padding:1px 4px}
.scroll{overflow-x:auto;max-width:100%}
td.best{font-weight:700;background:#e8f3e8}
.charts{display:grid;grid-template-columns:repeat(auto-fill,minmax(min(100%,520px),1fr));
gap:16px}
svg.chart{width:100%;height:auto;max-width:760px;font-size:12px;font-family:inherit}
svg.chart .ct{font-weight:600;font-size:13px}
svg .grid{stroke:#e6e6e6}svg .frame{fill:none;stroke:#333}
svg.legend{font-size:12px;max-width:100%;height:auto}
.legends{display:flex;flex-wrap:wrap;gap:8px 32px}
.tokens{line-height:2;font-family:ui-monospace,"DejaVu Sans Mono",monospace;font-size:.88rem}
.tokens span{padding:1px 2px;border-radius:3px}
img.map{width:96px;max-width:100%;image-rendering:pixelated;display:block}
.hidden{display:none!important}
.banner{padding:8px 12px;background:#fff4d6;border:1px solid #e0c070;border-radius:6px}
@media (max-width:640px){main{padding:8px}.row{grid-template-columns:1fr}
.info img{max-width:160px}.cells{grid-template-columns:repeat(auto-fill,minmax(140px,1fr))}
.count{margin-left:0}.controls{position:static}}
"""

# Filtering hides rows (by label) and cells (by method); sorting reorders rows. The count of
# visible cells lets a reader, and the browser test, see what a filter did.
SCRIPT = """
(function(){
  var rows=document.getElementById('rows');if(!rows)return;
  var label=document.getElementById('f-label'),sort=document.getElementById('f-sort');
  var boxes=Array.prototype.slice.call(document.querySelectorAll('input[name=method]'));
  var count=document.getElementById('count');
  function apply(){
    var want=label.value,methods={},shown=0,total=0;
    boxes.forEach(function(b){methods[b.value]=b.checked;});
    Array.prototype.forEach.call(rows.children,function(row){
      var labels=(row.getAttribute('data-labels')||'').split('\\u001f');
      var keep=want==='*'||labels.indexOf(want)>=0;
      row.classList.toggle('hidden',!keep);
      Array.prototype.forEach.call(row.querySelectorAll('figure[data-method]'),function(c){
        var on=methods[c.getAttribute('data-method')]!==false;
        c.classList.toggle('hidden',!on);total++;if(keep&&on)shown++;
      });
    });
    count.textContent=shown+' of '+total+' panels shown';
    count.setAttribute('data-shown',shown);
  }
  function order(){
    var how=sort.value,items=Array.prototype.slice.call(rows.children);
    items.sort(function(a,b){
      if(how==='index')return a.getAttribute('data-index')-b.getAttribute('data-index');
      var pa=parseFloat(a.getAttribute('data-prob')),pb=parseFloat(b.getAttribute('data-prob'));
      if(isNaN(pa))pa=-1;if(isNaN(pb))pb=-1;
      return how==='prob-asc'?pa-pb:pb-pa;
    });
    items.forEach(function(r){rows.appendChild(r);});
  }
  label.addEventListener('change',apply);
  boxes.forEach(function(b){b.addEventListener('change',apply);});
  sort.addEventListener('change',function(){order();apply();});
  apply();
})();
"""


def esc(value: object) -> str:
    return escape(str(value), quote=True)


def page(title: str, body: str, script: bool = False, refresh: int | None = None) -> str:
    """A complete HTML document. `refresh` (seconds) makes a page still being written reload
    itself, so a long batch can be watched; the final page has none."""
    head = ('<meta charset="utf-8"><meta name="viewport" content="width=device-width, '
            'initial-scale=1">'
            # No network: nothing may be fetched but the report's own pictures.
            '<meta http-equiv="Content-Security-Policy" content="default-src \'none\'; '
            "img-src data: file: 'self'; style-src 'unsafe-inline'; script-src 'unsafe-inline'\">")
    if refresh:
        head += f'<meta http-equiv="refresh" content="{int(refresh)}">'
    # One join: the body can be tens of MB of data URIs, copied once.
    return "".join((f'<!DOCTYPE html><html lang="en"><head>{head}<title>{esc(title)}</title>'
                    f"<style>{CSS}</style></head><body><main>", body, "</main>",
                    f"<script>{SCRIPT}</script>" if script else "", "</body></html>\n"))


def table(header: list[str], rows: list[list[str]], caption: str = "",
          classes: list[list[str]] | None = None) -> str:
    """A table of already-escaped cells, in a box that scrolls sideways on a narrow screen."""
    head = "".join(f'<th scope="col">{h}</th>' for h in header)
    body = []
    for i, row in enumerate(rows):
        cells = []
        for j, cell in enumerate(row):
            cls = classes[i][j] if classes else ""
            attr = f' class="{cls}"' if cls else ""
            cells.append(f'<th scope="row"{attr}>{cell}</th>' if j == 0
                         else f"<td{attr}>{cell}</td>")
        body.append(f"<tr>{''.join(cells)}</tr>")
    cap = f"<caption>{caption}</caption>" if caption else ""
    return (f'<div class="scroll"><table>{cap}<thead><tr>{head}</tr></thead>'
            f'<tbody>{"".join(body)}</tbody></table></div>')
