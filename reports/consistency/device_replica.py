import sys,json,time,math,copy,torch
from bench.metrics import compute_metrics
from bench.plugins import get_plugin_manager
from bench.registry import Registry
from bench.contracts import FitContext
from bench.cache import ModelCache
from bench.profiles import get_profile
from samplers.diffusion.schedule import DiscreteVPSchedule,KARRAS_RHO
from samplers.diffusion.model import ExactEps
from samplers.nets import SinusoidalEmbedding,mlp
dev='cuda';reg=Registry.from_plugin_manager(get_plugin_manager());tg=reg.target('gmm3d');S=DiscreteVPSchedule()
ref=tg.sample(10000,torch.Generator().manual_seed(123));f64=torch.float64
L=S.lambda_(torch.tensor([S.t_min,S.t_max],dtype=f64));lmin,lmax=float(L[0]),float(L[1]);amin=float(S.alpha(torch.tensor(S.t_min,dtype=f64)))
class CN(torch.nn.Module):
    def __init__(s,d):
        super().__init__();s.schedule=S;s.embed=SinusoidalEmbedding(64);s.mlp=mlp(d+64,d,128,6,'silu');s.register_buffer('m',torch.zeros(d));s.register_buffer('sd',torch.ones(d))
    def forward(s,x,t):
        lam=S.lambda_(t);r=torch.exp(-lam)[:,None];r0=math.exp(-lmin);a=S.alpha(t)[:,None];c=x/a-s.m;ci=torch.rsqrt(r*r+s.sd**2)
        F=s.mlp(torch.cat([ci*c,s.embed((lmin-lam)/(lmin-lmax))],-1))
        return amin*(s.m+s.sd**2/((r-r0)**2+s.sd**2)*c+s.sd*(r-r0)*ci*F)
def levels(N):
    lo,hi=math.exp(-lmin)**(1/KARRAS_RHO),math.exp(-lmax)**(1/KARRAS_RHO);rho=(lo+torch.linspace(0,1,N+1,dtype=f64)*(hi-lo))**KARRAS_RHO
    t=S.t_from_lambda(-rho.log());t[0],t[-1]=S.t_min,S.t_max;return t.float().to(dev)
def step(te,x,t1,t0,heun):
    a1,a0=S.alpha(t1)[:,None],S.alpha(t0)[:,None];h=S.sigma(t0)[:,None]/a0-S.sigma(t1)[:,None]/a1;y=x/a1;e1=te(x,t1);ye=y+h*e1
    return a0*(y+h*0.5*(e1+te(a0*ye,t0))) if heun else a0*ye
def train(te,N=17,ema=0.95,huber=True,heun=True,steps=3000,B=512):
    torch.manual_seed(0);net=CN(3).to(dev);g=torch.Generator(device=dev).manual_seed(1);x=tg.sample(100000,g);v=x.std(0);net.m.copy_(x.mean(0));net.sd.copy_(v)
    tn=copy.deepcopy(net).requires_grad_(False);o=torch.optim.Adam(net.parameters(),1e-3);q=torch.optim.lr_scheduler.CosineAnnealingLR(o,steps,1e-5);ts=levels(N)
    for k in range(steps):
        x0=tg.sample(B,g);e=torch.randn(x0.shape,generator=g,device=dev);i=torch.randint(0,N,(B,),generator=g,device=dev);t1,t0=ts[i+1],ts[i]
        xt=S.alpha(t1)[:,None]*x0+S.sigma(t1)[:,None]*e
        with torch.no_grad():an=tn(step(te,xt,t1,t0,heun),t0)
        d2=(((net(xt,t1)-an)/net.sd)**2).sum(1);c=0.00054*math.sqrt(3);l=(torch.sqrt(d2+c*c)-c).mean() if huber else d2.mean()
        o.zero_grad();l.backward();o.step();q.step()
        with torch.no_grad():
            for p,pe in zip(net.parameters(),tn.parameters()):pe.lerp_(p,1-ema)
    return net.eval()
def samp(net,k):
    g=torch.Generator(device=dev).manual_seed(7);z=torch.randn(10000,3,generator=g,device=dev)
    with torch.no_grad():
        x=net(z,torch.ones(10000,device=dev))
        if k==2:
            tau=S.t_from_lambda(torch.tensor(0.,dtype=f64));r=float(S.alpha(tau))/amin;s=(float(S.sigma(tau))**2-r*r*float(S.sigma(torch.tensor(S.t_min,dtype=f64)))**2)**.5
            x=net(r*x+s*torch.randn(x.shape,generator=g,device=dev),torch.full((10000,),float(tau),device=dev))
    return x.cpu()
def rep(lab,x):
    m=compute_metrics(x.float().cpu(),ref,seed=5);print(json.dumps({'row':lab,**{k:m[k] for k in ('mmd2','c2st','kurt_mse')}}),flush=True)
te=ExactEps(tg)
ctx=FitContext(torch.device(dev),torch.float32,0,get_profile('quick'),ModelCache(None))
f=reg.sampler('distilled-1@exact').fit(tg,ctx);rep('distilled-1@exact',f(10000,torch.Generator(device=dev).manual_seed(7)))
for lab,kw in json.loads(sys.argv[1]).items():
    t0=time.time();net=train(te,**kw)
    for k in (1,2):rep(f'{lab} {k}-step {time.time()-t0:.0f}s',samp(net,k))
