import sys,json,time,torch
from bench.metrics import compute_metrics
from bench.plugins import get_plugin_manager
from bench.registry import Registry
from bench.contracts import FitContext
from bench.cache import ModelCache
from bench.profiles import get_profile
from samplers.diffusion.schedule import DiscreteVPSchedule,timesteps
from samplers.diffusion.sample import ddim
from samplers.diffusion.model import ExactEps
from samplers.diffusion.train import _noised_batch,get_epsnet
from samplers.nets import SinusoidalEmbedding,mlp
def to_eps(p,T,x,a,s,m,d):
    r=x-a*m
    if p=='eps':return T
    if p=='x0':return (r-a*d*T)/s
    return (s*r+a*d*T)/(a*a*d+s*s)
def from_eps(p,e,x,a,s,m,d):
    if p=='eps':return e
    y=(x-a*m-s*e)/(a*d)
    return y if p=='x0' else a*e-s*y
def pre(p,c,a,s,d):
    V=a*a*d*d+s*s;ci=V.rsqrt()
    if c=='none':return ci,torch.zeros_like(ci),torch.ones_like(ci)
    if p=='eps':return ci,s/V,a*d*ci
    if p=='x0':return ci,a*d/V,s*ci
    cv=a*s*(1-d);return ci,cv/V,torch.sqrt(1-cv*cv/V)
class Den(torch.nn.Module):
    def __init__(s,dim,sch,p,c,act):
        super().__init__();s.schedule=sch;s.p=p;s.c=c
        s.embed=SinusoidalEmbedding(64);s.mlp=mlp(dim+64,dim,128,6,act)
        s.register_buffer('data_mean',torch.zeros(dim));s.register_buffer('data_std',torch.ones(dim))
        e=sch.lambda_(torch.tensor([sch.t_min,sch.t_max],dtype=torch.float64));s.lr=(float(e[0]),float(e[1]))
    def raw(s,x,t):
        a=s.schedule.alpha(t).to(x.dtype)[:,None];sg=s.schedule.sigma(t).to(x.dtype)[:,None]
        ci,cs,co=pre(s.p,s.c,a,sg,s.data_std);r=x-a*s.data_mean
        tn=t if s.c=='none' else (s.lr[0]-s.schedule.lambda_(t))/(s.lr[0]-s.lr[1])
        F=s.mlp(torch.cat([ci*r,s.embed(tn)],-1));return cs*r+co*F,co,a,sg
    def forward(s,x,t):
        T,_,a,sg=s.raw(x,t);return to_eps(s.p,T,x,a,sg,s.data_mean,s.data_std)
    def loss(s,x,t,e):
        T,co,a,sg=s.raw(x,t);tr=from_eps(s.p,e,x,a,sg,s.data_mean,s.data_std);return (((T-tr)/co)**2).mean()
dev=sys.argv[2];tn=sys.argv[1];torch.set_num_threads(4)
tg=Registry.from_plugin_manager(get_plugin_manager()).target(tn);sch=DiscreteVPSchedule()
ref=tg.sample(10000,torch.Generator().manual_seed(123))
ts=timesteps(sch,50,'time_uniform').to(dev)
def ev(lab,net,t0):
    z=torch.randn(10000,tg.dim,generator=torch.Generator(device=dev).manual_seed(7),device=dev)
    with torch.no_grad():x=ddim(net,z,ts).cpu().float()
    m=compute_metrics(x,ref,seed=5);m.update(tg.extra_metrics(x,ref));m['train_s']=time.time()-t0
    print(json.dumps({'target':tn,'row':lab,**m}),flush=True)
ctx=FitContext(torch.device(dev),torch.float32,0,get_profile('quick'),ModelCache(None))
try:
    t0=time.time();ev('paper-eps',get_epsnet(tg,ctx),t0)
    if tg.has('noised_score'):ev('exact',ExactEps(tg).to(dev),time.time())
except Exception as e:print('ERR',e,flush=True)
for lab in sys.argv[3].split(','):
    p,c,sd,act=lab.split('/');t0=time.time();torch.manual_seed(0)
    net=Den(tg.dim,sch,p,c,act).to(dev);g=torch.Generator(device=dev).manual_seed(1)
    if sd=='std':x=tg.sample(100000,g);v=x.std(0);net.data_mean.copy_(x.mean(0));net.data_std.copy_(v.clamp(min=0.01*float(v.max())))
    o=torch.optim.Adam(net.parameters(),1e-3);q=torch.optim.lr_scheduler.StepLR(o,1000,0.999)
    for i in range(3000):
        l=net.loss(*_noised_batch(tg,sch,1024,g,torch.float32));o.zero_grad();l.backward();o.step();q.step()
    net.eval();ev(lab,net,t0)
